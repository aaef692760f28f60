"""The ONNX Runtime inference core: package validation, providers, translation and embeddings."""

import json
import logging
import shutil
import threading

import numpy as np
import pytest

from model.checkpoint import load_model
from model.search import TorchStepModel
from engine.search import Decoding, SearchOptions, pad_batch, search
from engine.package import PackageError, load_package, read_manifest, write_manifest
from engine import step_model
from engine.step_model import key_layout
from engine.translator import Translator
from engine.sessions import RuntimeOptions

ONE_THREAD = RuntimeOptions(intra_op_threads=1)
SENTENCES = ["The house sees the small cat.", "Click on the button.", "Menu.",
             "Choose the new green window and open the file on the table and the menu."]


@pytest.fixture(scope="module")
def fp32(tiny_packages) -> Translator:
    return Translator(tiny_packages["fp32"], ONE_THREAD)


@pytest.fixture(scope="module")
def int8_row_scales(tiny_int8_row_scales) -> Translator:
    """int8 with a scale per row (`python -m export --row-scales`): no sentence depends on its batch."""
    return Translator(tiny_int8_row_scales, ONE_THREAD, require_parity=False)


@pytest.fixture(scope="module")
def torch_model(tiny_checkpoint):
    return load_model(tiny_checkpoint)[0]


@pytest.fixture()
def package_copy(tiny_packages, tmp_path):
    copy = tmp_path / "package"
    shutil.copytree(tiny_packages["int8"], copy)
    return copy


# --- package validation ---------------------------------------------------------------------------
def test_valid_package_loads(package_copy):
    manifest = load_package(package_copy, expect_pair=("en", "de"))
    assert (manifest.name, manifest.model.n_decoder_layers, manifest.special_ids.eos) == ("en-de", 2, 3)


def test_missing_file_is_refused(package_copy):
    (package_copy / "decoder.onnx").unlink()
    with pytest.raises(PackageError, match="decoder.onnx is missing"):
        Translator(package_copy, ONE_THREAD)


def test_truncated_file_is_refused(package_copy):
    data = (package_copy / "encoder.onnx").read_bytes()
    (package_copy / "encoder.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(PackageError, match="encoder.onnx is corrupted"):
        Translator(package_copy, ONE_THREAD)


def test_wrong_pair_is_refused(package_copy):
    with pytest.raises(PackageError, match="translates en-de, expected de-en"):
        Translator(package_copy, ONE_THREAD, expect_pair=("de", "en"))


def test_graph_names_must_match_the_manifest(package_copy):
    path = package_copy / "package.json"
    manifest = json.loads(path.read_text())
    manifest["graphs"]["decoder"]["outputs"][0] = "logits"  # the graph calls it log_probs
    path.write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="decoder.onnx has inputs"):
        Translator(package_copy, ONE_THREAD)


@pytest.mark.parametrize("change, message", [
    ({"target_language": "en"}, "same"),
    ({"source_language": "english"}, "not a language code"),
    ({"source_language": "en\n", "name": "en\n-de"}, "not a language code"),
    ({"format_version": True}, "format_version"),
    ({"precision": "int4"}, "precision"),
    ({"special_ids": {"pad": 0, "unk": 1, "bos": 2, "eos": 2}}, "distinct"),
    ({"unexpected": 1}, "unexpected"),
])
def test_inconsistent_manifest_is_refused(package_copy, change, message):
    path = package_copy / "package.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, **change}))
    with pytest.raises(PackageError, match=message if message != "unexpected" else "Extra inputs"):
        load_package(package_copy)


def test_a_manifest_that_is_not_utf8_or_from_an_old_export_with_odd_fields_is_refused_with_a_message(package_copy):
    path = package_copy / "package.json"
    manifest = json.loads(path.read_text())
    path.write_bytes(json.dumps(manifest).replace('"en-de"', '"en-d\u00e9"').encode("latin-1"))
    with pytest.raises(PackageError, match="invalid manifest"):
        load_package(package_copy)
    path.write_text(json.dumps({**manifest, "format_version": 1, "source_checkpoint": "ckpt"}))
    with pytest.raises(PackageError, match="Re-export it: python -m export --checkpoint checkpoints/<pair>"):
        load_package(package_copy)


# --- providers --------------------------------------------------------------------------------------
def test_runs_on_the_cpu_provider(fp32):
    assert fp32.provider == "CPUExecutionProvider"
    assert fp32.decoder_session.get_providers()[0] == "CPUExecutionProvider"
    assert (fp32.name, fp32.source_language, fp32.target_language, fp32.precision) == ("en-de", "en", "de", "fp32")


def test_a_package_checked_on_another_provider_is_named_in_a_warning(package_copy, caplog):
    manifest = read_manifest(package_copy)
    write_manifest(package_copy, manifest.model_copy(update={"parity": {**manifest.parity, "provider": "CUDAExecutionProvider"}}))
    with caplog.at_level(logging.WARNING):
        Translator(package_copy, ONE_THREAD)
    assert "parity with PyTorch was checked on CUDAExecutionProvider, not on CPUExecutionProvider" in caplog.text
    assert "--device cpu" in caplog.text
    caplog.clear()
    older = {k: v for k, v in manifest.parity.items() if k != "provider"}  # an older export: checked on the CPU
    write_manifest(package_copy, manifest.model_copy(update={"parity": older}))
    with caplog.at_level(logging.WARNING):
        Translator(package_copy, ONE_THREAD)
    assert "was checked on" not in caplog.text


def test_missing_cuda_falls_back_loudly_or_fails_when_strict(tiny_packages, caplog):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    wanted = RuntimeOptions(providers=("CUDAExecutionProvider", "CPUExecutionProvider"), intra_op_threads=1)
    with caplog.at_level(logging.WARNING):
        translator = Translator(tiny_packages["fp32"], wanted)
    assert translator.provider == "CPUExecutionProvider"
    assert "CUDAExecutionProvider was requested" in caplog.text and "runs on CPUExecutionProvider" in caplog.text
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider was requested first"):
        Translator(tiny_packages["fp32"], RuntimeOptions(providers=wanted.providers, strict_providers=True))


# --- translation --------------------------------------------------------------------------------------
def test_tokenize_appends_eos_and_detokenize_inverts(fp32):
    ids = fp32.tokenize(SENTENCES)
    assert all(row[-1] == 3 and 3 not in row[:-1] for row in ids)
    assert fp32.detokenize([row[:-1] for row in ids]) == SENTENCES


def test_detokenize_puts_back_what_the_vocabulary_lacks(fp32):
    source, unk = "Click ✓ on the button ☃.", fp32.manifest.special_ids.unk
    (ids,) = fp32.tokenize([source])
    assert ids[:-1].count(unk) == 2  # ✓ and ☃: not in the vocabulary
    assert "⁇" in fp32.detokenize([ids[:-1]])[0]  # without the source: SentencePiece's own rendering
    assert fp32.detokenize([ids[:-1]], [source]) == [source]  # with it: the source's spans, in order
    (doubled,) = fp32.tokenize(["Click ✓ on ✓ the button ☃."])
    # more UNKs than the source had: the third leaves nothing behind, not even its space
    assert fp32.detokenize([doubled[:-1]], [source]) == ["Click ✓ on ☃ the button."]


# 32 sentences of different lengths: in one batch, sentences finish mid-batch and rows are compacted.
BATCH_32 = [" ".join([SENTENCES[i % 4]] * (1 + i % 2)) for i in range(32)]


@pytest.mark.parametrize("beam_size, n_best", [(1, 1), (4, 3), (8, 8)])
@pytest.mark.parametrize("texts", [SENTENCES[:1], BATCH_32], ids=["batch1", "batch32"])
def test_onnx_search_equals_pytorch_search(fp32, torch_model, beam_size, n_best, texts):
    options = SearchOptions(bos_id=2, eos_id=3, beam_size=beam_size, n_best=n_best)
    batch = pad_batch(fp32.tokenize(texts), 0)
    expected = search(TorchStepModel(torch_model), batch, 0, options)
    got = fp32.translate_ids(fp32.tokenize(texts), options)
    assert len({len(r.hypotheses[0].tokens) for r in expected}) > 1 or len(texts) == 1  # they end at different steps
    for e, g in zip(expected, got):
        assert [h.tokens for h in g.hypotheses] == [h.tokens for h in e.hypotheses]
        assert np.allclose([h.score for h in g.hypotheses], [h.score for h in e.hypotheses], atol=1e-4)


@pytest.mark.parametrize("beam_size", [1, 4])
@pytest.mark.parametrize("package", ["fp32", "int8_row_scales"])
def test_sentences_joining_a_running_batch_get_what_they_get_alone(request, package, beam_size):
    """Continuous batching: sentences join mid-decode (one or two at a time, longer sources than the running
    ones, more steps than the running batch has room for: the buffers grow and the history moves to the
    front); each gets exactly the hypotheses and scores it gets decoded alone (int8 too, with row scales)."""
    translator = request.getfixturevalue(package)
    options = translator.search_options(beam_size=beam_size, n_best=beam_size)
    ids = translator.tokenize([SENTENCES[2], SENTENCES[1], *BATCH_32[:4], BATCH_32[7], SENTENCES[3]])
    alone = [translator.translate_ids([row], options)[0] for row in ids]
    results = decode_with_joins(translator, ids, options)
    assert sorted(results) == list(range(len(ids)))
    assert_as_alone(results, alone)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_histories_move_to_the_front_once_the_first_sentences_have_left(fp32, beam_size, monkeypatch):
    """Continuous batching: every row reads every slot written since the running batch's history began, so once
    the sentence that began it has left, the live ones' histories move to the front (fewer slots read per step);
    they still get exactly what they get alone."""
    options = fp32.search_options(beam_size=beam_size, n_best=beam_size)
    ids = fp32.tokenize([SENTENCES[3], BATCH_32[3], BATCH_32[5]])  # 14 tokens out; then 12-14 and 9-10 (tiny model)
    alone = [fp32.translate_ids([row], options)[0] for row in ids]
    lengths, keep = [], fp32.step_model.keep

    def keep_and_measure(state, sentences):
        before = state.length
        keep(state, sentences)
        lengths.append((before, state.length))

    monkeypatch.setattr(fp32.step_model, "keep", keep_and_measure)
    results = decode_joining_at(fp32, ids, options, {0: [0], 9: [1], 10: [2]})  # the others outlive the first one
    assert any(after < before for before, after in lengths), lengths  # the slots before the live sentences: gone
    assert_as_alone(results, alone)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_sentences_that_began_the_batch_are_unaffected_by_a_joiner_that_left(fp32, beam_size):
    """A sentence joins, ends and is compacted away: the rows left all began with the batch, so the steps stop
    writing the attention mask, which must not keep the joiner's hidden slots."""
    options = fp32.search_options(beam_size=beam_size, n_best=beam_size)
    ids = fp32.tokenize([SENTENCES[3], BATCH_32[3], "Menu."])  # 14 and 12-14 tokens out; then one of 3-5
    alone = [fp32.translate_ids([row], options)[0] for row in ids]
    results = decode_joining_at(fp32, ids, options, {0: [0, 1], 2: [2]})
    assert_as_alone(results, alone)


def test_a_withdrawn_sentence_leaves_the_running_batch(fp32):
    options = fp32.search_options(beam_size=2)
    ids = fp32.tokenize(SENTENCES)
    alone = [fp32.translate_ids([row], options)[0].hypotheses[0].tokens for row in ids]
    decoding = Decoding(fp32.step_model, options)
    decoding.join(pad_batch(ids, 0), ["a", "b", "c", "d"], 0)
    results = dict(decoding.step())
    decoding.withdraw({"b", "d"})
    assert decoding.tags == [tag for tag in "ac" if tag not in results]
    while decoding.sentences:
        results.update(decoding.step())
    assert set(results) <= {"a", "b", "c", "d"} and {"a", "c"} <= set(results)
    assert results["a"].hypotheses[0].tokens == alone[0] and results["c"].hypotheses[0].tokens == alone[2]


@pytest.mark.parametrize("beam_size", [1, 4])
def test_compaction_moves_only_the_sentences_past_the_live_count(fp32, beam_size, monkeypatch):
    """Finished sentences' places are filled by the live sentences from past the first n places (n: live
    sentences), which then sit out of order; the others stay put. Sentences that join afterwards take free places,
    and everyone still gets exactly what they get alone."""
    options = fp32.search_options(beam_size=beam_size, n_best=beam_size)
    ids = fp32.tokenize([*BATCH_32[:12], SENTENCES[3], BATCH_32[5]])
    alone = [fp32.translate_ids([row], options)[0] for row in ids]
    moves, compact = [], fp32.step_model.compact

    def compact_and_record(state):
        before = state.alive.copy()
        compact(state)
        moves.append((before, state.alive.copy()))

    monkeypatch.setattr(fp32.step_model, "compact", compact_and_record)
    results = decode_joining_at(fp32, ids, options, {0: list(range(12)), 6: [12], 7: [13]})
    for before, after in moves:
        assert (after < len(after)).all()  # every live sentence within the first n places
        stayed = before < len(before)
        assert (after[stayed] == before[stayed]).all() and len(set(after.tolist())) == len(after)
    assert any((np.diff(after) < 0).any() for _, after in moves)  # some sentence was moved into an earlier place
    assert_as_alone(results, alone)


def test_decoder_writes_its_caches_in_place(fp32):
    """The caches bound to the decoder are the state's own arrays: steps write slots, nobody copies them."""
    model = fp32.step_model
    state = model.start(pad_batch(fp32.tokenize(SENTENCES), 0), 2, 8)
    caches = list(state.caches)
    tokens = np.full(state.rows, 2, dtype=np.int64)
    for _ in range(3):
        candidates = model.step(state, tokens, 4)
        model.reorder(state, np.tile([1, 0], (state.sentences, 1)))
        tokens = candidates.ids[:, 0].copy()
    assert all(a is b for a, b in zip(caches, state.caches))
    assert all(np.abs(c[:, :, :3]).sum(axis=(1, 3)).all() for c in state.caches)  # slots 0..2 written for every row
    assert (state.indirection[:, :, :3] == [[1, 0, 1], [0, 1, 0]]).all()  # beams swapped after every step


def test_the_encoder_in_slices_gives_what_one_run_gives(fp32, monkeypatch):
    """Long batches are encoded a few sentences at a time (bounded activations): the keys/values are the same."""
    sources = pad_batch(fp32.tokenize(SENTENCES * 3), 0)
    monkeypatch.setattr(step_model, "ENCODER_TOKENS", len(sources) * sources.shape[1])  # one run
    whole = fp32.step_model.encode(sources)
    monkeypatch.setattr(step_model, "ENCODER_TOKENS", 2 * sources.shape[1])  # two sentences per slice
    sliced = fp32.step_model.encode(sources)
    assert len(sliced) == len(whole) and all(np.allclose(a, b, atol=1e-5) for a, b in zip(sliced, whole))
    # Slices write into their rows of the result through IO binding: exactly what running each slice plainly gives.
    model = fp32.step_model
    plain = [model.encoder.run(model.cross_names, {"input_ids": sources[i : i + 2]}) for i in range(0, len(sources), 2)]
    assert all(np.array_equal(a, np.concatenate(parts)) for a, parts in zip(sliced, zip(*plain)))


@pytest.fixture(scope="module")
def device_layout(tiny_packages) -> Translator:
    """The step model as the CUDA provider runs it (caches in buffers of their own, bound by address as input
    and output, cross keys/values uploaded per binding, no compaction), with the CPU standing in for the GPU."""
    translator = Translator(tiny_packages["fp32"], ONE_THREAD)
    translator.step_model.device = ("cpu", 0)
    return translator


@pytest.mark.parametrize("beam_size", [1, 4])
def test_the_device_cache_layout_gives_the_host_layout_results(fp32, device_layout, beam_size):
    options = fp32.search_options(beam_size=beam_size, n_best=beam_size)
    ids = fp32.tokenize(BATCH_32)
    expected, got = fp32.translate_ids(ids, options), device_layout.translate_ids(ids, options)
    for e, g in zip(expected, got):
        assert [h.tokens for h in g.hypotheses] == [h.tokens for h in e.hypotheses]
        assert np.allclose([h.score for h in g.hypotheses], [h.score for h in e.hypotheses], atol=1e-5)
    # Sentences joining mid-decode grow the buffers: the caches make the round trip through the host.
    alone = [device_layout.translate_ids([row], options)[0] for row in ids[:6]]
    results = decode_with_joins(device_layout, ids[:6], options)
    assert [[h.tokens for h in results[i].hypotheses] for i in range(6)] == [[h.tokens for h in a.hypotheses] for a in alone]


def test_key_caches_convert_to_the_cuda_kernels_tiled_layout_and_back():
    cache = np.random.default_rng(0).standard_normal((3, 2, 5, 8)).astype(np.float32)  # [N, H, C, K]
    tiled = key_layout(cache, to_device=True)
    assert tiled.shape == cache.shape and np.array_equal(key_layout(tiled, to_device=False), cache)
    assert tiled.reshape(3, 2, 2, 5, 4)[1, 1, 1, 3, 2] == cache[1, 1, 3, 6]  # [n, h, k // 4, c, k % 4] = [n, h, c, k]


def decode_joining_at(translator: Translator, ids: list[list[int]], options: SearchOptions, joins: dict[int, list[int]]
                      ) -> dict:
    """Decode with the sentences `joins[step]` joining the running batch before that step → {index: result}."""
    decoding, results = Decoding(translator.step_model, options), {}
    for step in range(max(joins) + 1 + options.max_length):
        if step in joins:
            decoding.join(pad_batch([ids[i] for i in joins[step]], 0), joins[step], 0)
        results.update(decoding.step() if decoding.sentences else [])
        if not decoding.sentences and step >= max(joins):
            break
    assert sorted(results) == sorted(i for joining in joins.values() for i in joining)
    return results


def assert_as_alone(results: dict, alone: list) -> None:
    """Each sentence got exactly the hypotheses and scores it gets decoded alone."""
    for i, expected in enumerate(alone):
        assert [h.tokens for h in results[i].hypotheses] == [h.tokens for h in expected.hypotheses], i
        assert np.allclose([h.score for h in results[i].hypotheses], [h.score for h in expected.hypotheses], atol=1e-5)


def decode_with_joins(translator: Translator, ids: list[list[int]], options: SearchOptions) -> dict:
    """Decode the first two sentences and let the others join the running batch, one or two every third step →
    {index: result}."""
    decoding = Decoding(translator.step_model, options)
    decoding.join(pad_batch(ids[:2], 0), [0, 1], 0)
    waiting, results, step = list(range(2, len(ids))), {}, 0
    while decoding.sentences or waiting:
        if waiting and step % 3 == 2:
            joining, waiting = waiting[: 1 + step % 2], waiting[1 + step % 2 :]
            decoding.join(pad_batch([ids[i] for i in joining], 0), joining, 0)
        results.update(decoding.step() if decoding.sentences else [])
        step += 1
    return results


def test_package_of_an_older_format_is_refused_with_the_export_command(package_copy):
    manifest = json.loads((package_copy / "package.json").read_text())
    manifest["format_version"] = 1
    (package_copy / "package.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=r"older export.*python -m export --checkpoint .* --out .* --precision int8"):
        load_package(package_copy)


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_fp32_results_do_not_depend_on_batch_composition(fp32, batch_size):
    options = fp32.search_options(beam_size=2)
    ids = fp32.tokenize(SENTENCES)
    alone = [fp32.translate_ids([row], options)[0].hypotheses[0].tokens for row in ids]
    batched = []
    for start in range(0, len(ids), batch_size):
        batched += [r.hypotheses[0].tokens for r in fp32.translate_ids(ids[start : start + batch_size], options)]
    assert batched == alone


def test_translate_returns_n_best_texts(tiny_packages):
    int8 = Translator(tiny_packages["int8"], ONE_THREAD)
    results = int8.translate(SENTENCES[:2], beam_size=3, n_best=2, max_length=6)
    assert [len(r) for r in results] == [2, 2]
    assert all(len(t.tokens) < 6 and isinstance(t.text, str) for r in results for t in r)
    assert results[0][0].score >= results[0][1].score


def test_too_long_or_empty_sources_are_refused(fp32):
    options = fp32.search_options()
    with pytest.raises(ValueError, match="at most 64"):
        fp32.translate_ids([[5] * 64 + [3]], options)
    with pytest.raises(ValueError, match="no tokens"):
        fp32.translate_ids([[]], options)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        fp32.translate_ids([[5, 96, 3]], options)


def test_concurrent_calls_give_the_sequential_results(fp32):
    options = fp32.search_options(beam_size=2)
    ids = fp32.tokenize(SENTENCES)
    expected = [[r.hypotheses[0].tokens for r in fp32.translate_ids([row], options)] for row in ids]
    results: dict[int, list] = {}

    def work(i: int) -> None:
        results[i] = [r.hypotheses[0].tokens for r in fp32.translate_ids([ids[i]], options)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(ids))] == expected


# --- embeddings -------------------------------------------------------------------------------------
def test_encode_gives_unit_norm_mean_pooled_embeddings(fp32, torch_model):
    import torch

    ids = fp32.tokenize(SENTENCES)
    embeddings, states = fp32.encode_ids(ids)
    assert embeddings.shape == (len(SENTENCES), 32)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert [s.shape for s in states] == [(len(row), 32) for row in ids]
    with torch.no_grad():  # padding must not leak into the mean: one sentence alone, through PyTorch
        memory, _ = torch_model.encoder(torch.tensor([ids[0]]))
    mean = memory[0].mean(0).numpy()
    assert np.allclose(embeddings[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert np.allclose(states[0], memory[0].numpy(), atol=1e-4)


def test_warmup_runs(fp32):
    fp32.warmup(batch_size=2)


@pytest.mark.parametrize("way", ["batch", "buckets", "continuous"])
def test_the_closed_loop_benchmark_keeps_every_client_busy_and_answers_what_it_takes(fp32, way):
    from bench.closed_loop import Clients, batches, continuous
    corpus = fp32.tokenize(SENTENCES * 3)
    clients, options = Clients(corpus, 5), fp32.search_options(beam_size=2)
    one_round = {"batch": lambda: batches(fp32, options, clients, ()), "buckets": lambda: batches(fp32, options, clients, (6,)),
                 "continuous": lambda: continuous(fp32, options, clients)}[way]()
    for _ in range(12):
        one_round()
    assert clients.answers > 0 and clients.tokens > 0
    assert clients.sent == 5 + clients.answers  # each answer sends that client's next sentence
    in_flight = clients.sent - clients.answers
    assert in_flight == 5 and len(clients.arrivals) <= in_flight
