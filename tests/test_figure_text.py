"""Text in figures that matplotlib's font cannot draw (a variant named in Japanese, the tokens of a
Chinese corpus): matplotlib warned once per character and per drawing and drew boxes; slmlab draws
it with an installed font that has it, and names what no font draws in one line."""

from __future__ import annotations

import warnings

from slmlab.plotting import pyplot, save_png, undrawable


def test_characters_no_font_draws_are_named_once_and_matplotlib_warns_of_none(tmp_path, caplog, monkeypatch):
    import slmlab.plotting

    monkeypatch.setitem(pyplot().rcParams, "font.family", ["DejaVu Sans"])  # as on a machine with no other font
    monkeypatch.setattr(slmlab.plotting, "_NAMED", set())
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING", logger="slmlab"):
        warnings.simplefilter("always")
        plt = pyplot()
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0], label="変種 é")
        ax.set_title("sweep 日本語")
        ax.legend()
        fig.tight_layout()  # a drawing before the PNG's, where matplotlib warned too
        assert undrawable(fig) == sorted("変種日本語")
        save_png(fig, tmp_path / "f.png", dpi=50)
    assert (tmp_path / "f.png").stat().st_size > 0 and not [w for w in caught if "Glyph" in str(w.message)]
    (record,) = caplog.records
    assert record.getMessage().startswith(f"{tmp_path / 'f.png'}: no installed font draws 5 of its characters (")
    assert "fontlist-*.json" in record.getMessage()
    caplog.clear()
    fig, ax = plt.subplots()
    ax.set_title("ROMEO: é — “quoted” ±3")
    save_png(fig, tmp_path / "g.png", dpi=50)
    assert not caplog.records  # DejaVu Sans draws Latin, punctuation and symbols


def test_a_figure_whose_missing_characters_were_all_named_before_is_not_named_again(tmp_path, caplog, monkeypatch):
    """An attention map per layer shows the same tokens: 24 layers gave 24 warnings."""
    import slmlab.plotting

    plt = pyplot()
    monkeypatch.setitem(plt.rcParams, "font.family", ["DejaVu Sans"])
    monkeypatch.setattr(slmlab.plotting, "_NAMED", set())
    with caplog.at_level("WARNING", logger="slmlab"):
        for index, title in enumerate(["中文", "文中", "中文字", "ROMEO"]):
            fig, ax = plt.subplots()
            ax.set_title(title)
            save_png(fig, tmp_path / f"{index}.png", dpi=30)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(tmp_path / "0.png"), str(tmp_path / "2.png")]
