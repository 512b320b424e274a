"""Search over the pieces the training targets use (data/output_vocab.py, decoders/narrow.py): a narrowed decoder
gives the same logits as the whole one on its rows and leaves the original alone; a trained run saves the list,
keeps its outputs inside it, and a damaged list is refused with the fix."""
from __future__ import annotations

import json

import pytest
import torch

import hourglass.decoders.pointer  # noqa: F401  (registration)
from hourglass._registry import DECODERS, ENCODERS
from hourglass.cli.text import load_seq2seq
from hourglass.data import output_vocab
from hourglass.decoders.narrow import MULTIPLE, narrow, shortlist_ids
from hourglass.errors import DataError
from hourglass.search import beam_search, greedy
from test_search import PAD, SMALL, _sources
from test_seq2seq import trained_run

VOCAB = 40
BOS, EOS = 2, 3


def test_shortlist_holds_the_seen_pieces_and_bos_eos_and_pads_to_a_block_friendly_width():
    assert shortlist_ids([10, 4, 7, 10], 200, (BOS, EOS)).tolist() == [BOS, EOS, 4, 7, 10]  # short: as it is
    ids = shortlist_ids(range(10, 80), 200, (BOS, EOS)).tolist()
    assert ids == sorted(ids) and set(range(10, 80)) | {BOS, EOS} <= set(ids) and len(ids) == 3 * MULTIPLE
    assert len(shortlist_ids(range(190), 200, (BOS, EOS))) == 192
    assert shortlist_ids(range(195), 200, (BOS, EOS)).tolist() == list(range(200))  # capped at the vocabulary


def _pair(dec: str, tie: bool):
    torch.manual_seed(0)
    encoder = ENCODERS.get("gru" if dec != "transformer" else "transformer")(vocab_size=VOCAB, pad_id=PAD,
                                                                           **SMALL["gru" if dec != "transformer"
                                                                                   else "transformer"])
    decoder = DECODERS.get(dec)(code=encoder.spec, vocab_size=VOCAB, pad_id=PAD, tie_embeddings=tie, **SMALL[dec])
    with torch.no_grad():  # a nonzero bias, so that a bias left whole or cut wrongly shows
        for name, p in decoder.named_parameters():
            if name == "output.bias":
                p.normal_()
    return encoder.double().eval(), decoder.double().eval()


@pytest.mark.parametrize("dec", ["gru", "gru-attention", "lstm-attention", "transformer"])
@pytest.mark.parametrize("tie", [False, True])
def test_a_narrowed_decoder_gives_the_whole_decoders_logits_on_its_rows_and_leaves_it_alone(dec, tie):
    encoder, decoder = _pair(dec, tie)
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    ids = torch.tensor([BOS, EOS, 5, 8, 9, 13, 21, 30])
    short = narrow(decoder, ids, bos=BOS, eos=EOS)
    assert short is not None and (short.bos, short.eos) == (0, 1)
    code = encoder(_sources())
    narrow_state, whole_state = short.decoder.init_state(code), decoder.init_state(code)
    tokens = torch.full((4,), BOS)
    with torch.no_grad():
        for t in range(3):  # narrowed ids in, narrowed logits out; the whole decoder reads the same pieces
            logits, narrow_state, _ = short.decoder.step(tokens, narrow_state)
            whole, whole_state, _ = decoder.step(ids[tokens], whole_state)
            torch.testing.assert_close(logits, whole[:, ids])
            tokens = logits.argmax(-1)
    assert decoder.get_submodule("output").weight.shape[0] == VOCAB
    for key, value in decoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(p.requires_grad for p in short.decoder.get_submodule("output").parameters())
    if tie:
        assert short.decoder.output.weight is (short.decoder.embedding.weight if dec != "transformer"
                                               else short.decoder.embedding.tokens.weight)


def test_search_on_a_narrowed_decoder_equals_search_with_the_other_pieces_masked():
    """Narrowing is the whole vocabulary with the other pieces at -inf: the same outputs and scores, and beam 1
    is still greedy."""
    encoder, decoder = _pair("gru-attention", True)
    ids = torch.tensor([BOS, EOS] + list(range(10, 40, 3)))
    short = narrow(decoder, ids, bos=BOS, eos=EOS)
    masked = torch.full((VOCAB,), float("-inf"), dtype=torch.float64)
    masked[ids] = 0.0
    step = decoder.step

    def masked_step(tokens, state):
        logits, state, weights = step(tokens, state)
        return logits + masked, state, weights

    code = encoder(_sources())
    with torch.no_grad():
        narrowed = short.widen(beam_search(short.decoder, code, beam=3, bos=short.bos, eos=short.eos, max_len=6,
                                           nbest=2))
        decoder.step = masked_step
        try:
            whole = beam_search(decoder, code, beam=3, bos=BOS, eos=EOS, max_len=6, nbest=2)
        finally:
            del decoder.step
        assert narrowed.tokens == whole.tokens
        for a, b in zip(narrowed.scores, whole.scores):
            assert a == pytest.approx(b, rel=1e-9)
        one = beam_search(short.decoder, code, beam=1, bos=short.bos, eos=short.eos, max_len=6)
        assert one.tokens == greedy(short.decoder, code, bos=short.bos, eos=short.eos, max_len=6).tokens


def test_pointer_decoders_are_not_narrowed():
    for name in ("gru-pointer", "transformer-pointer"):
        assert DECODERS.get(name).narrow_vocabulary(None, torch.tensor([BOS, EOS])) is None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory, "rnn")  # shared with test_seq2seq in one session


def test_a_trained_run_saves_the_pieces_of_its_targets_and_keeps_its_outputs_to_them(run_dir):
    run = load_seq2seq(str(run_dir))
    tok, data = run.data.target_tokenizer, run.data
    saved = json.loads((run_dir / output_vocab.FILE).read_text())
    assert saved["vocab_size"] == tok.vocab_size and saved["ids"] == data.output_vocab
    assert set(data.output_vocab) == set(output_vocab.seen_pieces(data.encoded("train").targets))
    flags = set(tok.encode("R")) | set(tok.encode("C"))
    assert not flags & set(data.output_vocab)  # the source's flags never occur in a target (letters a-f)
    lines = ["R a b c d e", "C f", "R d e", "C a b c d"]
    narrowed = run.task.translate(lines, data, beam=3, nbest=3)
    assert run.task._output_ids is not None and len(run.task._output_ids) < tok.vocab_size
    assert [n[0][0] for n in narrowed] == ["e d c b a", "f", "e d", "a b c d"]
    allowed = set(run.task._output_ids.tolist())
    for nbest in narrowed:
        for text, _ in nbest:
            assert set(tok.encode(text)) <= allowed
    assert run.task.search_options()["output_vocab"] == len(run.task._output_ids)  # evaluate --json reports it
    import hourglass.tasks.seq2seq as seq2seq

    source = data.encode_sources(lines)
    calls = []
    real_narrow = seq2seq.narrow
    seq2seq.narrow = lambda *a, **k: calls.append(1) or real_narrow(*a, **k)
    try:  # validation asks for the whole vocabulary, whatever an earlier read_with left
        run.task.generate(source, tok, beam=1, shortlist=False)
        assert not calls
        run.task.generate(source, tok, beam=1)
        assert calls
    finally:
        seq2seq.narrow = real_narrow
    run.task.restrict_output = False
    whole = run.task.translate(lines, data, beam=3, nbest=3)
    assert run.task._output_ids is None and [n[0][0] for n in whole] == [n[0][0] for n in narrowed]
    assert "output_vocab" not in run.task.search_options()


def test_a_run_without_the_list_or_told_not_to_use_it_decodes_over_its_whole_vocabulary(run_dir, tmp_path):
    import shutil

    import yaml

    old, off = tmp_path / "old-run", tmp_path / "off"
    shutil.copytree(run_dir, old)
    (old / output_vocab.FILE).unlink()
    shutil.copytree(run_dir, off)
    config = yaml.safe_load((off / "config.yaml").read_text())
    config["task"]["restrict_output"] = False
    (off / "config.yaml").write_text(yaml.safe_dump(config))
    for path in (old, off):
        run = load_seq2seq(str(path))
        assert (run.data.output_vocab is None) == (path == old)
        assert run.task.translate(["R a b c"], run.data, beam=3)[0][0][0] == "c b a" and run.task._output_ids is None


@pytest.mark.parametrize("text, words", [
    ("{not json", "could not be read as JSON"),
    ('{"vocab_size": 40, "ids": [1, 2, 4000]}', "vocabulary ids from 0 to 39"),
    ('{"vocab_size": 40, "ids": []}', "non-empty list"),
    ('{"vocab_size": 40, "ids": [1, 2.0, true]}', "non-empty list"),
    ('{"ids": [1, 2]}', '"vocab_size": 40'),
    ('{"vocab_size": 8000, "ids": [1, 2, 4000]}', "belongs to another run"),
    ('{"ids": ' + "[" * 100000 + "]" * 100000 + "}", "could not be read as JSON"),  # nested too deep to parse
    ('{"vocab_size": 40, "ids": [' + "9" * 5000 + "]}", "could not be read as JSON"),  # too long an integer
    (b"\xff\xfe{", "could not be read as JSON"),
])
def test_a_damaged_list_is_refused_with_the_file_and_the_fix(tmp_path, text, words):
    path = tmp_path / output_vocab.FILE
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    with pytest.raises(DataError) as err:
        output_vocab.load(tmp_path, 40)
    message = str(err.value)
    assert words in message and str(tmp_path / output_vocab.FILE) in message and "Delete" in message
