"""End to end through click's CliRunner, plus one real subprocess."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from vitsearch.cli import main


@pytest.fixture
def run(monkeypatch, lite_uri, cli_encoder):
    monkeypatch.setenv("VITSEARCH_URI", lite_uri)

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_index_json_summary_then_incremental(run, photos):
    (photos / "broken.jpg").write_text("not a jpeg")
    result = run("index", photos, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("scanned", "added", "updated", "unchanged", "removed")} == {
        "scanned": 8, "added": 7, "updated": 0, "unchanged": 0, "removed": 0}
    assert summary["failed"] == [{"path": str(photos / "broken.jpg"), "reason": "not a recognised image format"}]
    assert summary["seconds"] >= 0
    again = json.loads(run("index", photos, "--json").stdout)
    assert again["unchanged"] == 7 and again["added"] == 0


def test_human_summary_lists_skipped_files_on_stderr(run, photos):
    (photos / "broken.png").write_bytes(b"")
    result = run("index", photos)
    assert result.exit_code == 0
    assert "added 7" in result.stdout and "failed 1" in result.stdout
    assert f"skipped {photos / 'broken.png'}: empty file" in result.stderr


def test_query_table_and_json_lines(run, photos):
    run("index", photos)
    table = run("query", photos / "chelsea.jpg", photos / "coffee.jpg", "-k", "2")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0] == f"query: {photos / 'chelsea.jpg'}"
    assert lines[1].split() == ["1", "1.0000", str(photos / "chelsea.jpg")]
    assert len(lines) == 6
    out = run("query", photos / "coffee.jpg", photos / "chelsea.jpg", "-k", "3", "--json").stdout.splitlines()
    records = [json.loads(line) for line in out]
    assert [r["query"] for r in records] == [str(photos / "coffee.jpg"), str(photos / "chelsea.jpg")]
    first = records[0]["results"][0]
    assert first["rank"] == 1 and first["path"] == str(photos / "coffee.jpg") and first["score"] >= 0.99
    assert {"width", "height", "sha256", "size", "mtime"} <= set(first)


@pytest.mark.parametrize("name, shown", [
    ("plain.jpg", "plain.jpg"),
    ("with space and 'quote'.jpg", "with space and 'quote'.jpg"),  # nothing odd: as it is
    ("a\nb.jpg", "$'a\\nb.jpg'"),
    ("tab\there's\\.jpg", "$'tab\\there\\'s\\\\.jpg'"),
    ("bell\x07\x7f.jpg", "$'bell\\x07\\x7f.jpg'"),
    ("next\x85line.jpg", "$'next\\xc2\\x85line.jpg'"),
    ("line\u2028sep.jpg", "$'line\\xe2\\x80\\xa8sep.jpg'"),
    ("caf\udce9.jpg", "$'caf\\xe9.jpg'"),  # a Latin-1 byte in a name that is not UTF-8
])
def test_paths_in_tables_are_quoted_like_ls_when_they_hold_control_characters(name, shown):
    from vitsearch.cli import _shown

    assert _shown(name) == shown


def test_query_table_escapes_a_newline_in_a_file_name_and_json_keeps_it(run, photos, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    odd = folder / "a\nb.jpg"
    odd.write_bytes((photos / "coffee.jpg").read_bytes())
    run("index", folder)
    table = run("query", odd, "-k", "1")
    assert table.exit_code == 0, table.output
    escaped = f"$'{folder}/a\\nb.jpg'"
    assert table.stdout.splitlines() == [f"query: {escaped}", f"     1  1.0000  {escaped}"]
    record = json.loads(run("query", odd, "-k", "1", "--json").stdout)
    assert record["query"] == str(odd) and record["results"][0]["path"] == str(odd)


def test_info_json(run, photos):
    run("index", photos)
    info = json.loads(run("info", "--json").stdout)
    assert info["count"] == 7 and info["dimension"] == 384 and os.path.isdir(info["model"])


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["index", "/no/such/folder"], 2, "does not exist"),
        (["index", ".", "--frobnicate"], 2, "No such option"),
        (["query", "/no/such.jpg"], 2, "does not exist"),
        (["query", "README.md", "-k", "0"], 2, "0 is not in the range"),
        (["index", ".", "--device", "tpu"], 2, "'tpu' is not one of"),
        (["index", ".", "--uri", "/tmp/store.txt"], 1, "ending in .db"),
    ],
)
def test_bad_usage_is_one_line_and_non_zero(run, args, code, words):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code
    assert words in result.output
    assert "Traceback" not in result.output


def test_query_errors_are_one_line(run, photos, tmp_path):
    result = run("query", photos / "coffee.jpg")
    assert result.exit_code == 1 and "run `vitsearch index` first" in result.stderr
    run("index", photos)
    (tmp_path / "bad.jpg").write_text("nope")
    result = run("query", tmp_path / "bad.jpg")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: cannot read query image {tmp_path / 'bad.jpg'}: not a recognised image format"
    result = run("query", photos / "coffee.jpg", "--filter", "width >>> 3")
    assert result.exit_code == 1 and result.stderr.startswith("Error: invalid filter") and len(result.stderr.splitlines()) == 1


def every_command(group=main, path=()):
    """The command lines of ``group`` and of every command and sub-command registered under it."""
    import click

    yield list(path)
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))
        else:
            yield [*path, name]


def test_every_command_is_found():
    assert {"index", "query", "info", "train", "eval", "serve"} <= {" ".join(c) for c in every_command()}


@pytest.mark.parametrize("cmd", list(every_command()), ids=lambda c: " ".join(c) or "vitsearch")
def test_help_of_every_command(cmd):
    result = CliRunner().invoke(main, cmd + ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize("argv, code, quick", [
    (["info", "--json"], 0, True),  # read-only and done: nothing to tear down
    (["--version"], 0, False),
    (["info", "--uri", "not-a-store.txt"], 1, False),  # errors exit as usual
])
def test_read_only_commands_end_the_process_at_once(monkeypatch, lite_uri, capsys, argv, code, quick):
    from vitsearch import cli

    exits = []

    def fake_exit(status):
        exits.append(status)
        raise SystemExit(status)

    monkeypatch.setenv("VITSEARCH_URI", lite_uri)
    monkeypatch.setattr(cli, "_READ_ONLY_DONE", False)
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(sys, "argv", ["vitsearch", *argv])
    with pytest.raises(SystemExit) as raised:
        cli.run()
    assert raised.value.code in ((code,) if code else (0, None)) and exits == ([0] if quick else [])
    if quick:
        assert json.loads(capsys.readouterr().out)["count"] == 0  # printed, and flushed before the exit


def test_help_imports_no_heavy_module():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "vitsearch", "--help"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "Usage:" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "transformers", "pymilvus", "numpy", "PIL"}


def test_real_subprocess_index_and_query(photos, tmp_path):
    env = {**os.environ, "VITSEARCH_URI": str(tmp_path / "sub.db")}
    cmd = [sys.executable, "-m", "vitsearch"]
    done = subprocess.run(cmd + ["index", str(photos), "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 7
    assert done.stderr == ""  # no warnings, no progress bar when stderr is not a terminal
    # an indexed file is queried by its stored vector: neither torch nor the model is loaded
    done = subprocess.run([sys.executable, "-X", "importtime"] + cmd[1:] + ["query", str(photos / "sub" / "horse.JPG"),
                          "--json", "-k", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["path"] == str(photos / "sub" / "horse.JPG")
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "pymilvus" in imported and not imported & {"torch", "transformers", "scipy"}
    # a new image goes through the model: vitsearch's own ViT, without transformers
    Image.open(photos / "sub" / "horse.JPG").rotate(4).save(tmp_path / "new.jpg")
    done = subprocess.run([sys.executable, "-X", "importtime"] + cmd[1:] + ["query", str(tmp_path / "new.jpg"),
                          "--json", "-k", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported and not imported & {"transformers", "scipy"}
    hit = json.loads(done.stdout)["results"][0]
    assert hit["path"] == str(photos / "sub" / "horse.JPG") and 0.8 < hit["score"] < 0.9999
    done = subprocess.run(cmd + ["info", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and json.loads(done.stdout)["count"] == 7, done.stderr


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_train_then_eval_from_the_command_line(tmp_path, tiny_models):
    from helpers import labelled_folder

    data = labelled_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "model"
    result = cli("train", data, "--out", out, "--base", tiny_models["vit"], "--epochs", 2, "--batch-size", 6,
                 "--lr", "1e-3", "--workers", 0, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 2 and summary["train_images"] + summary["val_images"] == 18
    assert "training on" in result.stderr and "epoch 2/2" in result.stderr

    result = cli("eval", data, "--model", out, "-k", 3, "--workers", 0, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"n", "k", "precision_at_1", "precision_at_k", "recall_at_k", "map_at_r"} <= report.keys()
    assert report["n"] == 18 and report["k"] == 3
    human = cli("eval", data, "--model", out, "-k", 3, "--workers", 0)
    assert "P@3" in human.stdout and "mAP@R" in human.stdout

    again = cli("train", data, "--out", out, "--base", tiny_models["vit"])
    assert again.exit_code == 1 and "not empty" in again.stderr and "Traceback" not in again.output


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["train", ".", "--out", "o", "--epochs", "0"], 2, "0 is not in the range"),
        (["train", ".", "--out", "o", "--loss", "arcface"], 2, "'arcface' is not one of"),
        (["train", ".", "--out", "o", "--base", "x", "--from-scratch", "tiny"], 2, "not both"),
        (["train", "."], 2, "Missing option '--out'"),
        (["eval", ".", "-k", "0"], 2, "0 is not in the range"),
        (["eval", "/no/such/folder"], 2, "does not exist"),
    ],
)
def test_train_and_eval_usage_errors(args, code, words):
    result = cli(*args)
    assert result.exit_code == code, result.output
    assert words in result.stderr and "Traceback" not in result.output


def progress_of_every_kind():
    """What indexing, training and evaluation send their ``progress=`` callback."""
    from vitsearch.progress import Progress

    return [
        Progress("embedding", 0, 3), Progress("embedding", 2, 3), Progress("embedding", 3, 3),
        Progress("teacher", message="teacher: features of 24 images at 224 px (once, cached)"),
        Progress("start", message="training on 24 images (3 classes, 6 held out)"),
        Progress("step", 1, 2, "loss 0.5000, lr 1.00e-04", task="epoch 1/1", unit="batch", info={"loss": 0.5}),
        Progress("step", 2, 2, "loss 0.4000, lr 5.00e-05", task="epoch 1/1", unit="batch", info={"loss": 0.4}),
        Progress("epoch", message="epoch 1/1: loss 0.4500, val P@10 0.8000 (3s, 8.0 img/s)"),
        Progress("embed", 4, 4), Progress("near_dup", 1, 2), Progress("near_dup", 2, 2),
    ]


@pytest.mark.parametrize("tty", [True, False])
def test_one_display_renders_the_progress_of_every_command(monkeypatch, capsys, tty):
    from vitsearch.cli import _ProgressDisplay

    monkeypatch.setattr(_ProgressDisplay, "LOG_EVERY", 0.0)  # a count line for every count off a terminal
    with _ProgressDisplay() as display:
        display.tty = tty
        for event in progress_of_every_kind():
            display(event)
    err = capsys.readouterr().err
    for note in ("teacher: features of 24 images", "training on 24 images", "epoch 1/1: loss 0.4500, val P@10 0.8000"):
        assert note in err
    if tty:  # a bar per task, each closed full
        for bar in ("embedding: 100%", "epoch 1/1: 100%", "embed: 100%", "near_dup: 100%"):
            assert bar in err
        assert "loss 0.4000, lr 5.00e-05" in err
    else:
        for line in ("embedding: 2/3 img", "epoch 1/1: 1/2 batch, loss 0.5000, lr 1.00e-04", "near_dup: 2/2 img"):
            assert line + "\n" in err


def test_off_a_terminal_a_short_run_writes_notes_only(capsys):
    from vitsearch.cli import _ProgressDisplay

    with _ProgressDisplay() as display:
        display.tty = False
        for event in progress_of_every_kind():
            display(event)
    notes = [e.message for e in progress_of_every_kind() if e.total is None]
    assert capsys.readouterr().err.splitlines() == notes


def test_an_option_validation_error_is_a_one_line_usage_error():
    result = CliRunner().invoke(main, ["train", ".", "--out", "o", "--base", "x", "--from-scratch", "tiny"])
    assert result.exit_code == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: give a base model or a from-scratch size, not both"]


@pytest.mark.parametrize("raised, code, usage", [
    ("usage", 2, True),  # the library's UsageError: the caller's mistake
    ("value", 1, False),  # any other ValueError (numpy, torch, a bug): not blamed on the command line
])
def test_only_usage_errors_print_as_usage(monkeypatch, tmp_path, raised, code, usage):
    import vitsearch.evaluation
    from vitsearch.errors import UsageError

    def fake_evaluate(*args, **kwargs):
        if raised == "usage":
            raise UsageError("k must be at least 1, not 0")
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr(vitsearch.evaluation, "evaluate", fake_evaluate)
    result = CliRunner().invoke(main, ["eval", str(tmp_path)])
    assert result.exit_code == code
    assert ("Usage:" in result.output) is usage
    if not usage:
        assert isinstance(result.exception, ValueError) and "Error:" not in result.output


TRAIN_RUN_PARAMS = {"data", "out", "resume", "overwrite", "as_json"}  # what `train` takes beside TrainOptions


def test_every_train_option_is_a_field_of_train_options_and_back():
    import dataclasses

    from vitsearch.options import TrainOptions

    train_command = main.commands["train"]
    options = {p.name for p in train_command.params} - TRAIN_RUN_PARAMS
    assert options == {f.name for f in dataclasses.fields(TrainOptions)}


def test_a_train_options_field_without_an_option_is_refused():
    import dataclasses

    from vitsearch import cli as cli_module

    @dataclasses.dataclass
    class Extra:
        new_knob: int = 3

    with pytest.raises(TypeError, match="new_knob"):
        cli_module._train_option(dataclasses.fields(Extra)[0], int)


def _sample(param):
    """A command-line value for ``param`` other than its default, and the value click makes of it."""
    import click

    if param.is_flag:
        return [], param.flag_value
    kind = param.type
    if isinstance(kind, click.Choice):
        choice = next(c for c in reversed(kind.choices) if c != param.default)
        return [choice], choice
    if isinstance(kind, click.IntRange):
        value = (kind.min or 0) + 1
        return [str(value)], value
    if isinstance(kind, click.FloatRange):
        return ["0.5"], 0.5
    if kind == click.INT:
        return ["7"], 7
    return ["some-value"], "some-value"


def _train_option_params():
    return [p for p in main.commands["train"].params if p.name not in TRAIN_RUN_PARAMS]


@pytest.mark.parametrize("param", _train_option_params(), ids=lambda p: p.opts[0])
def test_each_train_option_given_reaches_train(monkeypatch, tmp_path, param):
    import vitsearch.training
    from vitsearch.errors import VitsearchError

    seen = {}

    def fake_train(data, out, *, resume, overwrite, progress, **options):
        seen.update(options)
        raise VitsearchError("stopped by the test")

    monkeypatch.setattr(vitsearch.training, "train", fake_train)
    args, value = _sample(param)
    assert value != param.default
    result = cli("train", tmp_path, "--out", tmp_path / "o", param.opts[0], *args)
    assert result.exit_code == 1 and "stopped by the test" in result.stderr, result.output
    assert seen == {param.name: value}  # given: passed on; the others keep the library's defaults


def test_eval_of_unlabelled_images_says_to_use_near_dup(tmp_path):
    from helpers import photo

    for i in range(3):
        photo(i).save(tmp_path / f"{i}.jpg")
    result = cli("eval", tmp_path)
    assert result.exit_code == 1 and "--near-dup" in result.stderr


def test_remove_rows_by_file_or_folder(run, photos):
    assert run("index", photos, "--json").exit_code == 0
    gone = photos / "chelsea.jpg"
    gone.unlink()  # rows of files that no longer exist can still be removed
    result = run("remove", gone, photos / "sub", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"removed": 5}
    assert json.loads(run("info", "--json").stdout)["count"] == 2
    assert run("remove", photos / "nothing").stdout.strip() == "removed 0 rows"


def test_index_and_remove_a_folder_whose_name_holds_a_newline(run, photos, tmp_path):
    folder = tmp_path / "nl\ndir"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        (folder / name).write_bytes((photos / name).read_bytes())
    assert json.loads(run("index", folder, "--json").stdout)["added"] == 2
    assert json.loads(run("index", folder, "--json").stdout)["unchanged"] == 2
    assert json.loads(run("remove", folder / "coffee.jpg", "--json").stdout) == {"removed": 1}
    assert json.loads(run("remove", folder, "--json").stdout) == {"removed": 1}


def test_roots_whose_names_are_not_utf8_are_skipped_and_json_stays_strict(run, photos, tmp_path):
    base = os.fsencode(tmp_path)
    folder, file = base + b"/d\xe9j\xe0", base + b"/lat\xe9.jpg"
    os.mkdir(folder)
    for raw in (folder + b"/rocket.jpg", file):
        with open(raw, "wb") as fh:
            fh.write((photos / "coffee.jpg").read_bytes())
    folder_s, file_s = os.fsdecode(folder), os.fsdecode(file)
    result = run("index", folder_s, file_s, photos / "chelsea.jpg", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["added"] == 1  # the rest of the run goes on
    shown = [f"$'{tmp_path}/d\\xe9j\\xe0/rocket.jpg'", f"$'{tmp_path}/lat\\xe9.jpg'"]
    assert sorted(f["path"] for f in summary["failed"]) == shown
    assert {f["reason"] for f in summary["failed"]} == {"file name is not valid UTF-8 (rename the file)"}
    removed = run("remove", file_s)
    assert removed.exit_code == 0 and removed.stdout.strip() == "removed 0 rows"
    assert removed.stderr.strip() == f"skipped {shown[1]}: file name is not valid UTF-8 (such files are never indexed)"
    query = run("query", file_s, "-k", "1", "--json")
    assert query.exit_code == 0, query.output
    assert json.loads(query.stdout)["query"] == shown[1]


def test_commands_on_a_store_that_does_not_exist_say_so_and_create_nothing(run, photos, tmp_path):
    missing = tmp_path / "nodir" / "typo.db"
    for args in (["remove", photos / "chelsea.jpg"], ["dups"], ["query", photos / "chelsea.jpg"],
                 ["tag", photos / "chelsea.jpg"]):
        result = run(*args, "--uri", missing)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr == f"Error: collection 'images' does not exist in {missing}: run `vitsearch index` first\n"
    info = run("info", "--uri", missing, "--json")
    assert info.exit_code == 0 and json.loads(info.stdout)["exists"] is False
    assert not (tmp_path / "nodir").exists()
    run("index", photos / "chelsea.jpg")  # a store that exists, without the collection asked for
    result = run("remove", photos / "chelsea.jpg", "--collection", "other")
    assert result.exit_code == 1 and "collection 'other' does not exist" in result.stderr


def test_dups_help_names_every_key_of_its_json(run, photos):
    run("index", photos)
    groups = json.loads(run("dups", "--json").stdout)["groups"]
    helped = run("dups", "--help").stdout
    assert groups and all(f'"{key}"' in helped for key in groups[0])


def test_a_photo_library_filtered_by_date_place_and_camera(run, tmp_path):
    pytest.importorskip("pillow_heif")
    from helpers import photo
    from photofiles import save_photo

    folder = tmp_path / "library"
    folder.mkdir()
    save_photo(folder / "summer.HEIC", photo(1), "HEIF", taken="2024:07:14 18:00:00", offset="+02:00",
               make="Apple", model="iPhone 13", gps=(48.8584, 2.2945))
    save_photo(folder / "winter.jpg", photo(2), "JPEG", taken="2024:01:05 09:00:00", make="Canon", model="EOS 80D",
               gps=(46.5197, 6.6323))
    photo(3).save(folder / "scan.png")
    assert json.loads(run("index", folder, "--json").stdout)["added"] == 3

    def found(*options):
        result = run("query", folder / "scan.png", "-k", "5", "--json", *options)
        assert result.exit_code == 0, result.output
        return sorted(os.path.basename(h["path"]) for h in json.loads(result.stdout)["results"])

    assert found() == ["scan.png", "summer.HEIC", "winter.jpg"]
    assert found("--taken-after", "2024-06-01", "--taken-before", "2024-09-01") == ["summer.HEIC"]
    assert found("--near", "48.86,2.29,5") == ["summer.HEIC"]
    assert found("--camera", "eos") == ["winter.jpg"]
    assert found("--camera", "canon", "--filter", "width > 10000") == []
    hit = json.loads(run("query", folder / "summer.HEIC", "-k", "1", "--json").stdout)["results"][0]
    assert (hit["camera_model"], hit["taken_at"]) == ("iPhone 13", 1720972800) and "exif_fields" not in hit

    info = run("info")
    assert "exif        taken_at 2, camera_make 2, camera_model 2, lens 0, gps_lat 2, gps_lon 2, orientation 0" in info.stdout
    assert json.loads(run("info", "--json").stdout)["exif"]["gps_lat"] == 2


@pytest.mark.parametrize("option, value, words", [
    ("--near", "48.8,2.3", "not LAT,LON,KM"), ("--near", "95,2,3", "latitude 95"),
    ("--taken-after", "last summer", "not a date or time"), ("--camera", "!!", "no letters or digits"),
])
def test_photo_filters_that_make_no_sense_are_usage_errors(run, photos, option, value, words):
    run("index", photos)
    result = CliRunner().invoke(main, ["query", str(photos / "coffee.jpg"), option, value])
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_the_photo_library_example_of_docs_photos_md_works_as_written(tmp_path):
    pytest.importorskip("pillow_heif")
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "photos.md").read_text()
    script = re.search(r"```python\n(# make_library\.py.*?)```", doc, re.DOTALL).group(1)
    commands = re.search(r"```bash\n(python make_library\.py\n.*?)```", doc, re.DOTALL).group(1).splitlines()
    (tmp_path / "make_library.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": str(root), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    outputs = []
    for line in commands:
        args = line.split(" ", 1)[1]
        argv = [sys.executable, *(["-m", "vitsearch"] if line.startswith("vitsearch ") else []), *shlex.split(args)]
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (line, r.stderr)
        outputs.append(r.stdout)
    assert "exif        taken_at 2, camera_make 2, camera_model 2, lens 0, gps_lat 2, gps_lon 2, orientation 0" in outputs[2]
    assert "count       3" in outputs[2]
    summer, near, camera = outputs[3], json.loads(outputs[4]), outputs[5]
    assert [line.split()[-1].rsplit("/", 1)[1] for line in summer.splitlines()[1:]] == ["IMG_0001.HEIC"]
    assert [h["path"].rsplit("/", 1)[1] for h in near["results"]] == ["IMG_0001.HEIC"]
    assert near["results"][0]["taken_at"] == 1720976400 and near["results"][0]["camera_model"] == "iPhone 13"
    assert [line.split()[-1].rsplit("/", 1)[1] for line in camera.splitlines()[1:]] == ["IMG_0002.jpg"]


def test_the_command_quiets_only_milvus_lites_grpc_thread_stopped_under_it(monkeypatch):
    import threading

    from vitsearch import cli

    seen = []
    monkeypatch.setattr(cli, "_THREAD_HOOK", seen.append)

    def args(exc):
        return threading.ExceptHookArgs((type(exc), exc, None, None))

    cli._thread_exception(args(ValueError("server must be started and not shutting down")))  # Ctrl-C's echo
    assert seen == []
    other = args(ValueError("something else"))
    cli._thread_exception(other)
    assert seen == [other]


def test_file_uris_name_local_files_everywhere(run, photos, tmp_path):
    from vitsearch.fetch import local_path

    assert local_path("file:///a%20b/c.jpg") == "/a b/c.jpg" and local_path("file://localhost/x.png") == "/x.png"
    assert local_path("s3://b/k.jpg") == "s3://b/k.jpg" and local_path("/plain") == "/plain"
    folder = tmp_path / "with space"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes((photos / "chelsea.jpg").read_bytes())
    uri = "file://" + str(folder).replace(" ", "%20")
    result = run("index", uri, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["added"] == 1
    result = run("query", uri + "/cat.jpg", "-k", "1", "--json")
    assert json.loads(result.output)["results"][0]["path"] == str(folder / "cat.jpg")
    result = run("remove", uri, "--json")
    assert json.loads(result.output) == {"removed": 1}
    result = run("query", "file:///no/such/file.jpg")
    assert result.exit_code == 2 and "does not exist" in result.output
