"""A classical baseline: TF-IDF word uni+bigrams with logistic regression (scikit-learn)."""

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline


def fit_tfidf_lr(train_texts: list[str], train_labels: np.ndarray, val_texts: list[str],
                 val_labels: np.ndarray, c_grid: tuple[float, ...],
                 min_df: int = 2) -> tuple[Pipeline, dict]:
    """Fit TF-IDF (uni+bigrams, sublinear tf) + logistic regression, picking C on validation.

    The vectorizer is fitted once on the training text; each C in `c_grid` refits only the
    linear model.

    Returns:
        (the pipeline with the best C, {"c": best C, "val_accuracy": its accuracy}).
    """
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True)
    train_features = vectorizer.fit_transform(train_texts)
    val_features = vectorizer.transform(val_texts)
    best = None
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=2000, solver="liblinear")
        model.fit(train_features, train_labels)
        accuracy = float((model.predict(val_features) == val_labels).mean())
        if best is None or accuracy > best[1]["val_accuracy"]:
            best = (model, {"c": c, "val_accuracy": accuracy})
    model, summary = best
    return make_pipeline(vectorizer, model), summary
