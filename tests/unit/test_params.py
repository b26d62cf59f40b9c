import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kd.params import ParamsError, load_params, parse_params


def test_committed_params_are_valid():
    params = load_params("params.yaml")
    assert 0 <= params.alpha <= 1
    assert params.teacher.engine == "local" and params.teacher.workers == 1
    assert params.kernel_sizes == (3,)  # the default: e64f64k3b4m (docs/results-and-levers.md)
    assert (params.student.embed_dim, params.student.num_filters) == (64, 64)
    # The defaults read the IMDb tarball and score with the pulled teacher: no teacher is made.
    assert params.data.source == "imdb" and params.data.path == "data/raw/aclImdb_v1.tar.gz"
    assert params.teacher.path == "models/teacher"
    assert (params.finetune.epochs, params.finetune.lr, params.finetune.batch_size) == (2, 8e-5, 32)


@pytest.mark.parametrize(("override", "message"), [
    ({"alpha": 1.5}, "`alpha` = 1.5"),
    ({"alpha": -0.1}, "`alpha` = -0.1"),
    ({"epochs": 0}, "`epochs` = 0"),
    ({"subset_size": -3}, "`subset_size` = -3"),
    ({"unsup_size": 2.5}, "`unsup_size` = 2.5"),
    ({"vocab": {"max_len": 400}, "kernel_sizes": [3, 500]}, "wider than vocab.max_len = 400"),
    ({"kernel_sizes": [], "student": {"ngram_order": 0}}, "non-empty list unless"),
    ({"temperature": 0}, "`temperature` = 0"),
    ({"kd_loss": "kl"}, "`kd_loss` = 'kl'"),
    ({"use_unsup": "yes"}, "`use_unsup` = 'yes'"),
    ({"teacher": {"head_tokens": 300}}, "`teacher.head_tokens` = 300"),
    ({"prepare": {"val_fraction": 1.0}}, "`prepare.val_fraction` = 1.0"),
    ({"student": {"dropout": 1}}, "`student.dropout` = 1"),
    ({"alpah": 0.5}, "unknown key(s) alpah"),
    ({"vocab": {"size": 10}}, "unknown key(s) vocab.size"),
    ({"train": 5}, "`train` must be a mapping"),
    ({"student": {"arch": "gru"}}, "`student.arch` = 'gru' is not allowed; it must be one of "
                                   "textcnn, bilstm, transformer"),
    ({"student": {"layers": 0}}, "`student.layers` = 0"),
    ({"student": {"members": 0}}, "`student.members` = 0 is not allowed; it must be an "
                                  "integer >= 1"),
    ({"student": {"ngram_order": 6}}, "`student.ngram_order` = 6"),
    ({"augment_size": -1}, "`augment_size` = -1 is not allowed; it must be an integer >= 0"),
    ({"augment_size": 2.5}, "`augment_size` = 2.5 is not allowed; it must be an integer >= 0"),
    ({"augment_size": "all"}, "`augment_size` = 'all'"),
    ({"augment": {"mask_prob": 1.5}}, "`augment.mask_prob` = 1.5"),
    ({"train": {"adversarial": -1}}, "`train.adversarial` = -1"),
    ({"train": {"ngram_lr": -0.01}}, "`train.ngram_lr` = -0.01"),
    ({"train": {"precision": "fp16"}}, "`train.precision` = 'fp16'"),
    ({"train": {"threads": -2}}, "`train.threads` = -2"),
    ({"device": "gpu"}, "`device` = 'gpu' is not allowed; it must be auto"),
    ({"device": "cuda:x"}, "`device` = 'cuda:x'"),
    ({"baselines": {"nb_c_grid": []}}, "`baselines.nb_c_grid` = []"),
    ({"teacher": {"engine": "spark"}}, "`teacher.engine` = 'spark' is not allowed; it must be "
                                        "one of local, ray"),
    ({"teacher": {"engine": "ray", "workers": 0}}, "`teacher.workers` = 0 is not allowed; it "
                                                   "must be an integer >= 1"),
    ({"teacher": {"engine": "ray", "workers": 1.5}}, "`teacher.workers` = 1.5"),
    ({"teacher": {"engine": "local", "workers": 2}}, "`teacher.workers` = 2 is not allowed; the "
                                                     "local engine runs one worker: set "
                                                     "teacher.engine = ray for more"),
    ({"data": {"source": "csv"}}, "`data.source` = 'csv' is not allowed; it must be one of "
                                  "imdb, files"),
    ({"data": {"source": "files", "path": "data/own"}}, "`data.train` = '' is not allowed; "
                                                        "data.source = files needs it"),
    ({"data": {"train": "../elsewhere/train.csv"}}, "`data.train` = '../elsewhere/train.csv' is "
                                                    "not allowed; it must be a name inside "
                                                    "data.path"),
    ({"data": {"test": "/abs/test.csv"}}, "`data.test` = '/abs/test.csv'"),
    ({"data": {"label_column": "text"}}, "`data.label_column` = 'text' is not allowed; it must "
                                         "differ from data.text_column"),
    ({"data": {"text_column": ""}}, "`data.text_column` = ''"),
    ({"data": {"max_overlap": 1.5}}, "`data.max_overlap` = 1.5 is not allowed; it must be a "
                                     "share in [0, 1]"),
    ({"data": {"positive_label": True}}, "`data.positive_label` = True"),
    ({"data": {"path": ""}}, "`data.path` = ''"),
    ({"data": {"imdb_label": "stars"}}, "`data.imdb_label` = 'stars' is not allowed; it must be "
                                        "one of sentiment, rating"),
    ({"data": {"source": "files", "path": "data/own", "train": "train.csv", "test": "test.csv",
               "imdb_label": "rating"}},
     "`data.imdb_label` = 'rating' is not allowed; it applies to data.source = imdb only"),
    ({"data": {"train_file": "x"}}, "unknown key(s) data.train_file"),
    ({"finetune": {"lr": 0}}, "`finetune.lr` = 0 is not allowed; it must be a number > 0"),
    ({"finetune": {"warmup": 1}}, "`finetune.warmup` = 1 is not allowed; it must be a share of "
                                  "the steps in [0, 1)"),
    ({"finetune": {"epochs": 0}}, "`finetune.epochs` = 0"),
    ({"finetune": {"batch_size": 2.5}}, "`finetune.batch_size` = 2.5"),
    ({"finetune": {"precision": "fp16"}}, "`finetune.precision` = 'fp16'"),
    ({"finetune": {"attention_dropout": 1}}, "`finetune.attention_dropout` = 1"),
    ({"finetune": {"max_grad_norm": -1}}, "`finetune.max_grad_norm` = -1"),
    ({"finetune": {"save_every": -5}}, "`finetune.save_every` = -5"),
])
def test_bad_values_name_the_key_and_value(override, message):
    raw = yaml.safe_load(open("params.yaml"))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert message in str(error.value)


def test_malformed_yaml_is_reported(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("alpha: [0.5\nepochs: 3\n")
    with pytest.raises(ParamsError, match="is not valid YAML"):
        load_params(path)


def test_exponent_floats_as_dvc_writes_them_are_numbers(tmp_path):
    # `dvc exp run -S train.lr=0.00005` writes 5e-05; plain YAML 1.1 would read a string.
    text = yaml.safe_dump(yaml.safe_load(Path("params.yaml").read_text()))
    text = text.replace("lr: 0.001", "lr: 5e-05").replace("alpha: 0.5", "alpha: 1E-1")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    assert params.train.lr == 5e-05 and params.alpha == 0.1
    path.write_text(text.replace("epochs: 5", "epochs: 5e0"))
    with pytest.raises(ParamsError, match="`epochs` = 5.0"):
        load_params(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_code_defaults_are_the_values_in_params_yaml():
    # A missing key takes its params.yaml value; older runs' values are sweep.LEGACY_DEFAULTS.
    committed = load_params("params.yaml").to_dict()
    assert json.dumps(parse_params({}).to_dict(), sort_keys=True) == json.dumps(committed,
                                                                                 sort_keys=True)


def test_to_dict_keeps_each_number_as_written():
    # Checkpoints embed json.dumps(to_dict()): an int must not turn into a float, nor back.
    raw = yaml.safe_load(open("params.yaml"))
    raw.update(temperature=3, alpha=1e-3, kernel_sizes=[3])
    raw["baselines"] = {**raw["baselines"], "nb_c_grid": [1, 2.5]}
    params = parse_params(raw)
    assert params.kernel_sizes == (3,)
    dumped = json.loads(json.dumps(params.to_dict()))
    assert dumped["temperature"] == 3 and isinstance(dumped["temperature"], int)
    assert dumped["alpha"] == 1e-3 and dumped["kernel_sizes"] == [3]
    assert dumped["baselines"]["nb_c_grid"] == [1, 2.5]
    assert isinstance(dumped["baselines"]["nb_c_grid"][0], int)
    assert isinstance(dumped["train"]["lr"], float)


def test_every_unknown_key_of_a_section_is_named():
    with pytest.raises(ParamsError, match=r"unknown key\(s\) train.lrr, train.sed; allowed: "):
        parse_params({"train": {"lrr": 1, "sed": 2}})


def test_params_do_not_import_the_loss():
    # Every stage imports kd.params: were the loss behind it, a loss edit would rerun them all.
    code = ("import sys, kd.params; "
            "assert 'kd.student.losses' not in sys.modules and 'torch' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('kd', 'torch')))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path("stages"))
