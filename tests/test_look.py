"""Looking inside: attention tables, heatmaps and the explorer page (tested in a real Chromium),
next-token probabilities through the sampler chain, the logit lens, embeddings in a plane."""

import numpy as np
import pytest
import torch

import lucidlm
from lucidlm import GenerationSettings, look
from lucidlm.cli import main
from lucidlm.errors import LucidError

from conftest import ARTIFACTS

pytestmark = pytest.mark.usefixtures("inference_only")


@pytest.fixture(scope="module")
def tokenizer(shakespeare):
    return lucidlm.Tokenizer.train(shakespeare[:30000], 320, pattern="gpt2")


@pytest.fixture(scope="module")
def model(tokenizer):
    """GQA and a sliding window on layer 1, so the views must say which heads share and mask more."""
    torch.manual_seed(0)
    m = lucidlm.Transformer(lucidlm.Config(vocab_size=tokenizer.vocab_size, context_length=64, d_model=48, n_layers=3,
                                           n_heads=4, n_kv_heads=2, sliding_window=4,
                                           sliding_window_layers=(1,))).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


@pytest.fixture(scope="module")
def saved(model, tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / "model"
    lucidlm.save(model, tokenizer, folder)
    return folder


TEXT = "To be, or not to be: that is"


def test_the_view_holds_the_probed_weights_and_they_reproduce_the_fused_output(model, tokenizer):
    ids = tokenizer.encode(TEXT)
    view = look.attention(model, tokenizer, TEXT, layers=[0, 2])
    assert view.weights.shape == (2, 4, len(ids), len(ids)) and view.layers == [0, 2]
    _, plain = model(torch.tensor([ids]), return_attentions=True)
    np.testing.assert_allclose(view.weights[1], plain[2][0].numpy(), atol=1e-6)
    seen = {}
    hook = model.blocks[2].attn.out.register_forward_pre_hook(lambda m, args: seen.setdefault("y", args[0]))
    with lucidlm.probe(model, qkv=[2]) as p:
        model(torch.tensor([ids]))
    hook.remove()
    v = p.v[2].repeat_interleave(2, dim=1)[0]  # (H, T, D): each kv head serves two query heads
    y = torch.einsum("hts,hsd->thd", torch.from_numpy(view.weights[1]), v).reshape(len(ids), -1)
    torch.testing.assert_close(y, seen["y"][0], atol=1e-5, rtol=1e-5)


def test_masked_cells_are_masked_not_zero(model, tokenizer):
    view = look.attention(model, tokenizer, TEXT)
    T = len(view.tokens)
    future = np.triu(np.ones((T, T), bool), 1)
    assert view.matrix(0, 0).mask[future].all() and not view.matrix(0, 0).mask[~future].any()
    beyond_window = np.tril(np.ones((T, T), bool), -4)
    assert view.matrix(1, 0).mask[beyond_window].all()  # layer 1 slides over 4 tokens
    table = view.table(1, 3, width=200)
    assert "key/value head 1, shared by heads 2-3" in table
    last_row = table.splitlines()[-1].split()
    assert last_row[1:].count("–") == T - 4  # the masked cells, and nothing shown as 0.00 in their place


def test_a_long_text_is_cut_to_the_terminal_with_a_marker(model, tokenizer):
    view = look.attention(model, tokenizer, TEXT * 3, layers=[0])
    table = view.table(0, 0, width=60)
    assert "are left out to fit 60 columns" in table and max(len(line) for line in table.splitlines()[2:]) <= 60


def test_pictures_are_written(model, tokenizer, tmp_path):
    view = look.attention(model, tokenizer, TEXT)
    paths = view.save_pngs(tmp_path / "att")
    assert [p.name for p in paths] == ["attention-layer-0.png", "attention-layer-1.png", "attention-layer-2.png",
                                       "attention-layer-all.png"]
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    lens = look.logit_lens(model, tokenizer, TEXT)
    emb = look.embeddings_2d(model, tokenizer, tokens=["the", "be", "not", "that", " is"])
    nxt = look.next_token(model, tokenizer, TEXT, top=5)
    for name, fig in (("lens", lens.heatmap()), ("emb", emb.scatter()), ("next", nxt.bar_chart())):
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5000


def test_the_explorer_is_one_file_with_no_network_reference(model, tokenizer, tmp_path):
    path = look.attention(model, tokenizer, TEXT + " </script><b>").html(tmp_path / "a.html")
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<link" not in page and " src=" not in page
    assert page.count("</script>") == 2  # the JSON's own "</script>" is escaped


def hostile_view():
    """Labels that would break a page that pasted them in: a placeholder, a comment, a tag."""
    tokens = ["__DATA__", "<!--", "<script>", "<img src=x onerror=alert(1)>", "__TITLE__"]
    T = len(tokens)
    weights = np.tril(np.ones((T, T)))[None, None] / np.arange(1, T + 1)[:, None]
    return look.AttentionView(weights.astype(np.float32), np.tril(np.ones((T, T), bool))[None], [0], tokens, 1,
                              text="".join(tokens))


def test_the_explorer_works_in_chromium(model, tokenizer, tmp_path, browser):
    path = look.attention(model, tokenizer, TEXT).html(tmp_path / "explorer.html")
    page = browser.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    requests = []
    page.on("request", lambda request: requests.append(request.url) if not request.url.startswith("file:") else None)
    page.goto(path.as_uri())
    lines = lambda: page.eval_on_selector_all("#lines path", "ps => ps.map(p => p.getAttribute('stroke-opacity'))")
    first = lines()
    assert len(first) > 10
    page.select_option("#layer", "1")
    layer_1 = lines()
    assert layer_1 != first  # another layer: another picture
    page.select_option("#head", "3")
    assert lines() != layer_1  # another head of the same layer: another picture
    page.hover("#lines text.query[data-index='5']")
    dimmed = page.eval_on_selector_all("#lines path", "ps => ps.filter(p => !p.classList.contains('dim')).map(p => p.dataset.q)")
    assert dimmed and set(dimmed) == {"5"}  # only the hovered token's lines stay
    assert "attends most to" in page.inner_text("#status")
    page.click("#view-matrix")
    page.hover("#matrix tr[data-q='4']")
    assert page.eval_on_selector("#matrix tr[data-q='4']", "tr => tr.classList.contains('active')")
    masked = page.eval_on_selector_all("#matrix td.masked", "tds => tds.length")
    T = len(tokenizer.encode(TEXT))
    assert masked == T * (T - 1) // 2 + (T - 4) * (T - 3) // 2  # the future, and beyond layer 1's window
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
    assert errors == [] and requests == []


def test_the_explorer_shows_any_text_as_text(tmp_path, browser):
    path = hostile_view().html(tmp_path / "hostile.html")
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: (errors.append("dialog"), dialog.dismiss()))
    page.goto(path.as_uri())
    labels = page.eval_on_selector_all("#lines text.query", "ts => ts.map(t => t.textContent)")
    assert labels == hostile_view().tokens and errors == []
    assert page.eval_on_selector_all("#layer option", "os => os.length") == 1


def test_the_explorer_draws_cross_attention_from_target_rows_to_source_columns(tmp_path, browser):
    # 3 target tokens attend over 5 source tokens: row q puts its weight on source token q + 1
    weights = np.zeros((1, 2, 3, 5), dtype=np.float32)
    for q in range(3):
        weights[0, :, q, q + 1] = 1.0
    view = look.AttentionView(weights, np.ones((1, 3, 5), bool), [0], ["trois", "·cent", "·douze"], 2,
                              key_tokens=["three", "·hundred", "·and", "·twelve", "</s>"], kind="cross-attention")
    assert "·douze" in view.table(0, head=0) and "·twelv" in view.table(0, head=0)  # columns: 6 characters
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(view.html(tmp_path / "cross.html").as_uri())
    assert page.eval_on_selector_all("#lines text.key", "ts => ts.map(t => t.textContent)") == view.keys
    assert page.eval_on_selector_all("#lines text.query", "ts => ts.map(t => t.textContent)") == view.tokens
    drawn = page.eval_on_selector_all("#lines path", "ps => ps.map(p => [p.dataset.q, p.dataset.k])")
    assert sorted(drawn) == [["0", "1"], ["1", "2"], ["2", "3"]]
    page.hover("#lines text.query[data-index='2']")
    assert "·twelve 1.00" in page.inner_text("#status")
    page.click("#view-matrix")
    assert page.eval_on_selector_all("#matrix tr", "trs => trs.length") == 4  # the header and 3 target rows
    assert page.eval_on_selector_all("#matrix tr:first-child th", "ths => ths.length") == 6
    assert errors == []


def test_next_token_shows_what_each_sampler_stage_removes(model, tokenizer):
    view = look.next_token(model, tokenizer, TEXT, top=8,
                           settings=GenerationSettings(temperature=0.7, top_k=5, top_p=0.9))
    logits = model(torch.tensor([tokenizer.encode(TEXT)]))[0, -1]
    probs = logits.softmax(-1)
    assert [c.token for c in view.candidates] == torch.topk(probs, 8).indices.tolist()
    assert [c.probability for c in view.candidates] == pytest.approx(torch.topk(probs, 8).values.tolist())
    assert all(c.removed_by == "top-k" for c in view.candidates[5:])  # the 6th and later: beyond top-k 5
    kept = [c for c in view.candidates if c.removed_by is None]
    assert sum(c.sampled for c in kept) == pytest.approx(1.0, abs=1e-5) and len(kept) == view.kept
    greedy = look.next_token(model, tokenizer, TEXT, top=3, settings=GenerationSettings(top_k=2))
    assert greedy.kept == 1 and greedy.candidates[0].sampled == pytest.approx(1.0)
    assert [c.removed_by for c in greedy.candidates] == [None, "greedy", "greedy"]  # top-k plays no part


def test_the_last_layer_of_the_lens_is_the_models_output(model, tokenizer):
    view = look.logit_lens(model, tokenizer, TEXT)
    ids = tokenizer.encode(TEXT)
    logits = model(torch.tensor([ids]))[0]
    assert len(view.top) == model.config.n_layers
    expected = lucidlm.look.tokens.labels(tokenizer, logits.argmax(-1).tolist())
    assert [row[0] for row in view.top[-1]] == expected
    ranks = (logits[:-1] > logits[:-1].gather(-1, torch.tensor(ids[1:])[:, None])).sum(-1)
    assert view.next_rank[-1].tolist() == ranks.tolist()


def test_pca_and_the_raw_plane(tokenizer):
    torch.manual_seed(0)
    points = torch.randn(40, 2) * torch.tensor([5.0, 0.5])
    rotation = torch.linalg.qr(torch.randn(6, 6))[0]
    lifted = torch.cat([points, torch.zeros(40, 4)], 1) @ rotation.T
    coords, explained = look.pca_2d(lifted)
    assert explained[0] > 0.9 and explained[0] + explained[1] == pytest.approx(1.0, abs=1e-5)
    # the points lie in a plane: PCA finds it, so every distance between them is kept
    torch.testing.assert_close(torch.cdist(coords, coords), torch.cdist(points, points), rtol=1e-4, atol=2e-3)
    pico = lucidlm.Transformer(lucidlm.Config(vocab_size=tokenizer.vocab_size, context_length=16, d_model=2,
                                              n_layers=1, n_heads=1))
    view = look.embeddings_2d(pico, tokenizer, tokens=["a", "b"])
    np.testing.assert_allclose(view.points[0], pico.tok_emb.weight[tokenizer.encode("a")[0]].detach().numpy())
    assert view.explained is None and view.axes == ("dimension 0", "dimension 1")


@pytest.mark.parametrize("call, message", [
    (lambda m, t: look.attention(m, t, TEXT, layers=[7]), "out of range"),
    (lambda m, t: look.attention(m, t, TEXT, layers=[]), "at least one layer"),
    (lambda m, t: look.attention(m, t, TEXT).table(0, 9), "head 9 is not in this view"),
    (lambda m, t: look.attention(m, t, TEXT, layers=[0]).table(2), "layer 2 is not in this view"),
    (lambda m, t: look.attention(m, t, ""), "empty"),
    (lambda m, t: look.attention(m, t, "word " * 100), "context"),
    (lambda m, t: look.logit_lens(m, t, "a").heatmap(), "at least two tokens"),
    (lambda m, t: look.embeddings_2d(m, t, tokens=["a"]), "at least two"),
])
def test_bad_requests_are_one_line_errors(model, tokenizer, call, message):
    with pytest.raises(LucidError, match=message):
        call(model, tokenizer)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_commands(capsys, saved, tmp_path):
    code, out, _ = run(capsys, "attention", TEXT, "--model", str(saved), "--layer", "1", "--head", "2")
    assert code == 0 and "layer 1, head 2" in out and "·" in out
    code, out, _ = run(capsys, "attention", TEXT, "--model", str(saved), "--png", str(tmp_path / "png"),
                       "--html", str(tmp_path / "e.html"), "--layers", "0,2")
    assert code == 0 and (tmp_path / "png" / "attention-layer-2.png").exists() and (tmp_path / "e.html").exists()
    code, out, _ = run(capsys, "next", TEXT, "--model", str(saved), "--top", "4", "--top-k", "2",
                       "--png", str(tmp_path / "n.png"))
    assert code == 0 and "top-k" in out and (tmp_path / "n.png").exists()
    code, out, _ = run(capsys, "lens", TEXT, "--model", str(saved), "--png", str(tmp_path / "l.png"))
    assert code == 0 and "layer 2" in out and (tmp_path / "l.png").exists()
    code, out, _ = run(capsys, "embeddings", "--model", str(saved), "--tokens", "the,be,not")
    assert code == 0 and "PC1" in out
    for argv, message in ((["attention", TEXT, "--model", str(saved), "--layer", "5"], "out of range"),
                          (["next", TEXT, "--model", str(saved), "--top-p", "nan"], "--top-p"),
                          (["attention", TEXT, "--model", str(saved), "--layers", "x"], "--layers")):
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1


def test_generate_shows_what_each_token_was_chosen_looking_at(capsys, saved, model, tokenizer):
    code, out, _ = run(capsys, "generate", "--model", str(saved), "--prompt", TEXT, "--max-tokens", "4",
                       "--show-attention")
    rows = [line for line in out.splitlines() if line[:4].strip().isdigit()]
    assert code == 0 and len(rows) == 4
    ids = tokenizer.encode(TEXT)
    first = int(model(torch.tensor([ids]))[0, -1].argmax())
    for row, text in ((rows[0], TEXT), (rows[1], ids + [first])):  # the prefill, then a step under the KV cache
        view = look.attention(model, tokenizer, text)  # each token was chosen at the last position so far
        weights = torch.from_numpy(view.weights[:, :, -1, :len(ids)]).mean(dim=(0, 1))
        best = int(weights.argmax())
        assert f"{view.tokens[best][:12]} {float(weights[best]):.2f}" in row


def test_drawing_leaves_the_users_matplotlib_alone(model, tokenizer):
    import matplotlib
    import matplotlib.pyplot as plt

    backend, open_figures = matplotlib.get_backend(), plt.get_fignums()
    look.attention(model, tokenizer, TEXT, layers=[0]).heatmap(0)
    look.logit_lens(model, tokenizer, TEXT).heatmap()
    assert matplotlib.get_backend() == backend and plt.get_fignums() == open_figures
