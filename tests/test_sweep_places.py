"""A sweep's run places (runs/SWEEP/VARIANT_sSEED) checked before any run trains: a file, a folder of
other files, are refused with advice that fits a sweep; what a run killed as it wrote left is free."""

from __future__ import annotations

import pytest

from slmlab.cli import main


@pytest.mark.parametrize("tune", [False, True])
def test_a_run_place_that_is_a_file_or_holds_other_files_is_refused_before_any_run_trains(micro_sweep, tmp_path, capsys, tune):
    """Such a run failed alone once the others had trained (the tuning runs too), with advice to
    pick another --name, an option the sweep does not have."""
    if tune:
        micro_sweep.write_text(micro_sweep.read_text() + "[tune]\nlr = [1e-3, 3e-3]\nsteps = 4\n")
    sweep = tmp_path / "runs" / "micro"
    sweep.mkdir(parents=True)
    (sweep / "full_s2").write_text("a file")
    for make in ("file", "folder"):
        assert main(["sweep", str(micro_sweep)]) == 2
        says = "is a file, not a run directory" if make == "file" else "holds files that are not a slmlab run"
        err = capsys.readouterr().err
        assert f"full_s2 {says}; move it away, or give the sweep another name or out_dir" in err
        assert sorted(path.name for path in sweep.iterdir() if path.name[0] != ".") == ["full_s2"]  # no run began (nor tuning)
        if make == "file":
            (sweep / "full_s2").unlink()
            (sweep / "full_s2").mkdir()
            (sweep / "full_s2" / "notes.txt").write_text("mine")
    assert (sweep / "full_s2" / "notes.txt").read_text() == "mine"
    (sweep / "full_s2" / "notes.txt").unlink()  # what a run killed as it wrote its config leaves: taken as free
    (sweep / "full_s2" / ".config.json.tmp-1234").write_text('{"na')
    assert main(["sweep", str(micro_sweep)]) == 0
