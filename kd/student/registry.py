"""The student that `params.yaml` asks for, built and, where asked, seeded from the teacher."""

from kd.errors import PipelineError
from kd.params import Params
from kd.student.models import (
    BiLSTM,
    BiLSTMConfig,
    Ensemble,
    Student,
    TextCNN,
    TextCNNConfig,
    TransformerConfig,
    TransformerStudent,
    project_embeddings,
    read_teacher_tensors,
    read_word_embeddings,
    seed_transformer,
    teacher_layers,
)

# The fields of a BERT config that shape the encoder; the rest (labels, architectures, ...)
# belongs to the teacher's head, which the student rebuilds as one logit.
_BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "hidden_act", "hidden_dropout_prob",
                "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                "layer_norm_eps", "pad_token_id")


def build_student(params: Params, tokenizer) -> Student:
    """The student of `params.student` for the student tokenizer `tokenizer`: one
    `build_member`, or an `Ensemble` of `student.members` of them (fresh weights each).

    Raises:
        PipelineError: as `build_member`.
    """
    members = [build_member(params, tokenizer) for _ in range(params.student.members)]
    return members[0] if len(members) == 1 else Ensemble(members)


def build_member(params: Params, tokenizer) -> Student:
    """One student of `params.student`'s arch and shape for the student tokenizer `tokenizer`.

    Raises:
        PipelineError: a shape the teacher cannot seed: an embedding wider than the teacher's,
            another vocabulary than the teacher's, more layers than the teacher has, or a
            transformer student of a teacher that is not a BERT.
    """
    student = params.student
    vocab_size = tokenizer.get_vocab_size()
    if student.arch == "transformer":
        return _transformer(params, tokenizer)
    if student.arch == "textcnn":
        model = TextCNN(TextCNNConfig(
            vocab_size=vocab_size, embed_dim=student.embed_dim, num_filters=student.num_filters,
            kernel_sizes=params.kernel_sizes, dropout=student.dropout,
            ngram_order=student.ngram_order, ngram_buckets=student.ngram_buckets))
    else:
        model = BiLSTM(BiLSTMConfig(vocab_size=vocab_size, embed_dim=student.embed_dim,
                                    hidden_size=student.hidden_size, dropout=student.dropout))
    if student.init_embeddings == "teacher" and model.embedding.embedding_dim:
        embeddings = read_word_embeddings(params.teacher.path)  # (V, H)
        rows, hidden = embeddings.shape
        if rows != vocab_size or student.embed_dim > hidden:
            raise PipelineError(
                f"the teacher's word embeddings are {(rows, hidden)} but the student's are "
                f"{(vocab_size, student.embed_dim)}: set vocab.source = teacher and "
                f"student.embed_dim <= {hidden}")
        # A smaller student keeps the teacher's leading principal directions.
        model.embedding.weight.data.copy_(project_embeddings(embeddings, student.embed_dim))
        model.embedding.weight.data[0] = 0
    return model


def _transformer(params: Params, tokenizer) -> TransformerStudent:
    from kd.teacher.scoring import check_teacher, positive_index

    student, teacher_path = params.student, params.teacher.path
    teacher_config = check_teacher(teacher_path)
    if teacher_config.model_type != "bert":
        raise PipelineError(f"student.arch = transformer needs a BERT teacher; {teacher_path} is "
                            f"a {teacher_config.model_type!r} model")
    total = teacher_config.num_hidden_layers
    if student.layers > total:
        raise PipelineError(f"params.yaml: `student.layers` = {student.layers} is not allowed; "
                            f"the teacher has {total} layers, so it must be in [1, {total}]")
    if student.max_len > teacher_config.max_position_embeddings:
        raise PipelineError(
            f"params.yaml: `student.max_len` = {student.max_len} is not allowed; the teacher "
            f"has {teacher_config.max_position_embeddings} positions")
    if tokenizer.get_vocab_size() != teacher_config.vocab_size:
        raise PipelineError("student.arch = transformer reads the teacher's word pieces: set "
                            "vocab.source = teacher")
    bert = {key: value for key, value in teacher_config.to_dict().items() if key in _BERT_FIELDS}
    model = TransformerStudent(TransformerConfig(
        bert={**bert, "num_hidden_layers": student.layers}, max_len=student.max_len,
        head_tokens=student.head_tokens, cls_id=tokenizer.token_to_id("[CLS]"),
        sep_id=tokenizer.token_to_id("[SEP]")))
    seed_transformer(model, read_teacher_tensors(teacher_path),
                     teacher_layers(total, student.layers), positive=positive_index(teacher_config))
    return model
