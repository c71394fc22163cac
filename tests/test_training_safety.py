"""`tokenocr train` / `tokenocr evaluate` against misuse: folders it did not make, absurd settings, interruptions and
full disks, finished runs resumed, hostile datasets, and errors that must stay one line naming their source."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

import tokenocr  # noqa: F401  (registers the Auto classes)
from tokenocr import TokenOCRImageProcessor, TokenOCRProcessor
from tokenocr.cli import build_parser, main
from tokenocr.conversion import convert_tokenizer
from tokenocr.modeling import TokenOCRModel
from tokenocr.training.data import load_token_mask_dataset

from fixture_cases import FIXTURES
from test_training import error_line, make_page, tiny_config, train, write_dataset


@pytest.fixture(scope="module")
def processor():
    tokenizer = convert_tokenizer(FIXTURES / "tiny_seg" / "checkpoint")
    return TokenOCRProcessor(image_processor=TokenOCRImageProcessor(size=28, max_tiles=6), tokenizer=tokenizer)


@pytest.fixture
def start(processor, tmp_path) -> Path:
    """A tiny model folder to train from."""
    torch.manual_seed(0)
    TokenOCRModel(tiny_config()).save_pretrained(tmp_path / "start")
    processor.save_pretrained(tmp_path / "start")
    return tmp_path / "start"


@pytest.fixture
def data(tmp_path) -> Path:
    """Four pages: with 2 pages a step, 2 steps an epoch."""
    return write_dataset(tmp_path / "data", [make_page(seed, 56, 28, 5) for seed in range(4)])


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def base_argv(start, data, output, *extra) -> list[str]:
    return ["--model", str(start), "--data", str(data), "--output", str(output), "--batch-size", "2",
            "--num-workers", "0", "--cpu", *extra]


def card_steps(folder: Path) -> str:
    card = (folder / "README.md").read_text()
    return card.split(" optimizer steps")[0].rsplit(" ", 1)[-1].lstrip("-* ")


# ---------------------------------------------------------------------------------------------------------------
# 1. --output must be this command's own earlier output.
# ---------------------------------------------------------------------------------------------------------------

def foreign_folder(tmp_path) -> Path:
    """Someone's folder that happens to hold a README, a config and a complete-looking checkpoint."""
    folder = tmp_path / "precious"
    checkpoint = folder / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (folder / "README.md").write_text("my notes\n")
    (folder / "config.json").write_text("{}\n")
    for name in ("model.safetensors", "trainer_state.json", "optimizer.pt"):
        (checkpoint / name).write_text("{}")
    return folder


def test_resume_writes_only_into_a_folder_train_made(start, data, tmp_path, capsys):
    folder = foreign_folder(tmp_path)
    before = snapshot(folder)
    for extra in (["--resume"], ["--resume", str(folder / "checkpoint-2")], []):
        assert train(base_argv(start, data, folder, "--max-steps", "1", *extra)) == 1
        line = error_line(capsys)
        assert f"--output '{folder}'" in line or "not a complete checkpoint" in line, line
        assert snapshot(folder) == before
    # Even a complete checkpoint of tokenocr train does not make someone else's folder an output of it.
    assert train(base_argv(start, data, tmp_path / "run", "--max-steps", "2", "--save-steps", "2")) == 0
    capsys.readouterr()
    assert train(base_argv(start, data, folder, "--max-steps", "3", "--resume",
                           str(tmp_path / "run" / "checkpoint-2"))) == 1
    assert "was not made by tokenocr train" in error_line(capsys)
    assert snapshot(folder) == before


def test_resume_refuses_a_model_folder_before_loading_anything(start, data, tmp_path, capsys):
    assert train(base_argv(start, data, tmp_path / "out", "--resume", str(start))) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a complete checkpoint of tokenocr train" in err[0], err  # no key warnings
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# 2 and 7. Settings refused while parsing, the bound in the message.
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option,value,message", [
    ("--num-workers", "100000", "at most 64"),
    ("--batch-size", "1000000000", "at most 4096"),
    ("--learning-rate", "1e300", "above 0 and at most 10"),
    ("--learning-rate", "nan", "above 0 and at most 10"),
    ("--learning-rate", "inf", "above 0 and at most 10"),
    ("--learning-rate", "0", "above 0 and at most 10"),
    ("--learning-rate", "-1e-4", "above 0 and at most 10"),
])
def test_absurd_settings_are_refused_while_parsing(option, value, message, capsys):
    argv = ["train", "--model", "m", "--data", "d", "--output", "o", f"{option}={value}"]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    line = error_line(capsys)
    assert message in line and f"got '{value}'" in line, line


def test_the_bounds_leave_real_settings_alone():
    args = build_parser().parse_args(["train", "--model", "m", "--data", "d", "--output", "o", "--num-workers", "64",
                                      "--batch-size", "4096", "--learning-rate", "10"])
    assert (args.num_workers, args.batch_size, args.learning_rate) == (64, 4096, 10.0)


# ---------------------------------------------------------------------------------------------------------------
# 3 and 4. Interruptions, full disks and finished runs.
# ---------------------------------------------------------------------------------------------------------------

def test_an_interrupted_final_save_leaves_no_half_model_and_resume_completes_it(start, data, tmp_path, monkeypatch,
                                                                                 capsys):
    import tokenocr.training.train as train_module

    output = tmp_path / "out"
    real_save = train_module.save_trained_model

    def cut_short(trainer, processor, folder, **kwargs):
        (Path(folder) / "config.json").write_text("{}")  # what a SIGTERM during the save leaves of it
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_trained_model", cut_short)
    assert train(base_argv(start, data, output, "--max-steps", "2", "--save-steps", "2")) == 130
    assert "checkpoints saved so far stay in --output" in error_line(capsys)
    assert sorted(entry.name for entry in output.iterdir()) == [".tokenocr-train", "checkpoint-2"]
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["data", "out", "start"]  # no temporary folder
    checkpoint = snapshot(output / "checkpoint-2")

    # What a SIGKILL during the final save leaves: the model being built beside --output, never inside it.
    killed = tmp_path / ".out.partial-999999999-x"
    killed.mkdir()
    (killed / ".tokenocr-partial").write_text("{}")
    (killed / "model.safetensors").write_bytes(b"x")
    monkeypatch.setattr(train_module, "save_trained_model", real_save)
    assert train(base_argv(start, data, output, "--max-steps", "2", "--save-steps", "2", "--resume")) == 0
    assert not killed.exists()
    assert "had finished at step 2: wrote its model from checkpoint-2; nothing more" in capsys.readouterr().err
    assert card_steps(output) == "2"
    trained = AutoModel.from_pretrained(output)
    saved = AutoModel.from_pretrained(output / "checkpoint-2")
    assert all(torch.equal(tensor, saved.state_dict()[name]) for name, tensor in trained.state_dict().items())
    assert snapshot(output / "checkpoint-2") == checkpoint  # carried over as it was


def test_resuming_a_finished_run_trains_nothing(start, data, tmp_path, capsys):
    # The start model's tokenizer names code it does not ship: no output may keep that entry.
    config_file = start / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_missing.MissingTokenizer", None]}
    config_file.write_text(json.dumps(config))
    output = tmp_path / "out"
    argv = base_argv(start, data, output, "--max-steps", "3", "--save-steps", "2")  # ends inside the 2nd epoch
    assert train(argv) == 0
    capsys.readouterr()
    for folder in (output, output / "checkpoint-3"):
        assert "auto_map" not in json.loads((folder / "tokenizer_config.json").read_text()), folder
        assert type(AutoProcessor.from_pretrained(folder)) is TokenOCRProcessor
    assert card_steps(output) == "3"
    before = snapshot(output)
    assert train([*argv, "--resume"]) == 0
    assert "nothing to do: the training in" in capsys.readouterr().err
    assert snapshot(output) == before
    # Asking for more steps continues it.
    assert train([*base_argv(start, data, output, "--max-steps", "4", "--save-steps", "2"), "--resume"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"tokenocr: trained model in {output}"
    assert card_steps(output) == "4" and (output / "checkpoint-4").is_dir()
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["data", "out", "start"]


FULL_DISK = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write "
             "failed")


def fail_saving_at(monkeypatch, failing_step: int):
    """Make `Trainer` fail, as torch does on a full disk, while it writes the optimizer of checkpoint `failing_step`
    (after the weights: the checkpoint is left partial)."""
    from tokenocr.training.train import TokenOCRTrainer

    real = TokenOCRTrainer._save_optimizer_and_scheduler

    def save(self, output_dir):
        if self.state.global_step == failing_step:
            (Path(output_dir) / "optimizer.pt").write_bytes(b"PK")
            raise RuntimeError(FULL_DISK)
        return real(self, output_dir)

    monkeypatch.setattr(TokenOCRTrainer, "_save_optimizer_and_scheduler", save)


def test_a_full_disk_is_one_line_and_its_partial_checkpoint_blocks_nothing(start, data, tmp_path, monkeypatch,
                                                                            capsys):
    output = tmp_path / "out"
    argv = base_argv(start, data, output, "--max-steps", "4", "--save-steps", "2")
    fail_saving_at(monkeypatch, 2)
    assert train(argv) == 1
    line = error_line(capsys)
    assert f"cannot write the checkpoint or model in '{output}': writing a file failed (is the disk full?)" in line
    assert "MB free" in line and "inline_container" not in line
    assert not output.exists()  # nothing complete was saved: a plain rerun is not blocked

    monkeypatch.undo()
    fail_saving_at(monkeypatch, 4)
    assert train(argv) == 1
    assert "is the disk full?" in error_line(capsys)
    assert sorted(entry.name for entry in output.iterdir()) == [".tokenocr-train", "checkpoint-2"]  # 4 removed

    monkeypatch.undo()
    assert train([*argv, "--resume"]) == 0
    assert card_steps(output) == "4"
    assert type(AutoModel.from_pretrained(output)) is TokenOCRModel


def test_a_partial_first_checkpoint_left_by_a_kill_is_started_over(start, data, tmp_path, capsys):
    output = tmp_path / "out"
    argv = base_argv(start, data, output, "--max-steps", "1", "--save-steps", "1")
    (output / "checkpoint-1").mkdir(parents=True)  # what a SIGKILL at the first checkpoint leaves
    (output / "checkpoint-1" / "model.safetensors").write_bytes(b"x")
    (output / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (output / ".tokenocr-train").write_text(json.dumps({"program": "tokenocr train"}))
    assert train([*argv, "--resume"]) == 1
    assert "holds no complete checkpoint-* folder to continue from; run without --resume" in error_line(capsys)
    assert train(argv) == 0
    assert card_steps(output) == "1"


def test_a_failed_resume_into_a_new_folder_leaves_nothing(start, data, tmp_path, monkeypatch, capsys):
    from tokenocr.training.train import TokenOCRTrainer

    assert train(base_argv(start, data, tmp_path / "run", "--max-steps", "2", "--save-steps", "2")) == 0
    capsys.readouterr()

    def broken(self, **kwargs):
        raise RuntimeError("the checkpoint does not load")

    monkeypatch.setattr(TokenOCRTrainer, "train", broken)
    new = tmp_path / "new"
    assert train(base_argv(start, data, new, "--max-steps", "3", "--resume",
                           str(tmp_path / "run" / "checkpoint-2"))) == 1
    assert "the checkpoint does not load" in error_line(capsys)
    assert not new.exists()


# ---------------------------------------------------------------------------------------------------------------
# 5. Saved datasets hold image data, never paths.
# ---------------------------------------------------------------------------------------------------------------

def test_a_saved_dataset_of_paths_is_refused(start, tmp_path, capsys):
    import datasets
    import pyarrow as pa

    secret = tmp_path / "secret.png"
    Image.new("RGB", (56, 28)).save(secret)
    page = make_page(1, 56, 28, 3)
    as_text = datasets.Dataset.from_list([{"image": str(secret), "mask": str(secret), "tokens": page["tokens"],
                                           "text": ""}])
    as_text.save_to_disk(str(tmp_path / "strings"))
    with pytest.raises(ValueError, match="the 'image' column holds .*not images.*file paths are refused"):
        load_token_mask_dataset(tmp_path / "strings")

    # An Image column whose entries name a file instead of holding its bytes (written past save_to_disk).
    good = load_token_mask_dataset(write_dataset(tmp_path / "source", [page]))
    good.save_to_disk(str(tmp_path / "paths"))
    arrow = next((tmp_path / "paths").glob("*.arrow"))
    table = pa.ipc.open_stream(pa.BufferReader(arrow.read_bytes())).read_all()  # in memory, not mapped
    struct = table.schema.field("mask").type
    pointing = pa.array([{"bytes": None, "path": str(secret)}], type=struct)
    table = table.set_column(table.schema.get_field_index("mask"), "mask", pointing)
    rewritten = arrow.with_suffix(".new")
    with pa.OSFile(str(rewritten), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    rewritten.replace(arrow)
    with pytest.raises(ValueError, match=r"row 0: the mask is a file path .*secret.png.*, not image data"):
        load_token_mask_dataset(tmp_path / "paths")
    argv = ["evaluate", "--model", str(start), "--data", str(tmp_path / "paths")]
    assert main(argv) == 1
    assert "row 0: the mask is a file path" in error_line(capsys)


def test_a_saved_dataset_is_checked_row_by_row(tmp_path):
    import datasets

    page = make_page(2, 56, 28, 3)
    good = load_token_mask_dataset(write_dataset(tmp_path / "source", [page, make_page(3, 56, 28, 3)]))
    assert len(load_token_mask_dataset(_saved(good, tmp_path / "fine"))) == 2
    small = good.cast_column("mask", datasets.Image()).map(
        lambda example, index: {"mask": example["mask"].resize((10, 10)) if index == 1 else example["mask"]},
        with_indices=True)
    with pytest.raises(ValueError, match=r"row 1: the mask is 10x10 but the image is 56x28"):
        load_token_mask_dataset(_saved(small, tmp_path / "small"))


def _saved(dataset, folder):
    dataset.save_to_disk(str(folder))
    return folder


# ---------------------------------------------------------------------------------------------------------------
# 7. Dataset errors name the file and line.
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,message", [
    (lambda record: record["tokens"][0].update(mask_index=float("inf")), "token 0's mask_index must be a whole "
                                                                         "number, got Infinity"),
    (lambda record: record["tokens"][1].update(id="abc"), "token 1's id must be a whole number, got \"abc\""),
    (lambda record: record["tokens"][0].update(id=2.5), "token 0's id must be a whole number, got 2.5"),
    (lambda record: record.update(mask="masks/small.png"), "the mask is 10x10 but the image is 56x28"),
    (lambda record: record.update(mask="metadata.jsonl"), "the mask is not an image Pillow reads"),
])
def test_malformed_pages_are_named_by_file_and_line(tmp_path, change, message):
    folder = write_dataset(tmp_path / "data", [make_page(seed, 56, 28, 3) for seed in range(2)])
    Image.fromarray(np.zeros((10, 10), dtype=np.uint16)).save(folder / "masks" / "small.png")
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    change(record)
    (folder / "metadata.jsonl").write_text(lines[0] + "\n\n" + json.dumps(record) + "\n")  # a blank line between
    with pytest.raises(ValueError) as error:
        load_token_mask_dataset(folder)
    assert f"{folder / 'metadata.jsonl'}, line 3: " in str(error.value) and message in str(error.value)


def test_a_token_id_outside_the_vocabulary_is_named_before_training(start, tmp_path, capsys):
    folder = write_dataset(tmp_path / "data", [make_page(seed, 56, 28, 3) for seed in range(3)])
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    record["tokens"][1]["id"] = 640  # tiny_config's vocabulary: 0 to 639
    lines[2] = json.dumps(record)
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    expected = (f"{folder / 'metadata.jsonl'}, line 3: token 1 has id 640, outside the model's vocabulary "
                "(ids 0 to 639).")
    assert train(base_argv(start, folder, tmp_path / "out", "--max-steps", "1")) == 1
    assert error_line(capsys) == f"tokenocr: error: {expected}"
    assert not (tmp_path / "out").exists()
    assert main(["evaluate", "--model", str(start), "--data", str(folder)]) == 1
    assert error_line(capsys) == f"tokenocr: error: {expected}"
