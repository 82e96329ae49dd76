import numpy as np
import pytest
from helpers import SAMPLES, photo
from PIL import Image

from vitsearch import Encoder
from vitsearch.errors import ImageError


def test_one_image_gives_a_vector_and_a_list_gives_a_matrix(tiny_models):
    enc = Encoder(str(tiny_models["vit"]), device="cpu", precision="fp32", num_workers=0)
    one = enc.encode(photo(1))
    many = enc.encode([photo(1), photo(2), photo(3)], batch_size=2)
    assert one.shape == (32,) and many.shape == (3, 32)
    assert one.dtype == np.float32 and many.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(one, many[0], atol=1e-6)
    assert enc.encode([]).shape == (0, 32)


def test_paths_bytes_pil_and_arrays_embed_alike(tiny_models, tmp_path):
    enc = Encoder(str(tiny_models["dinov2"]), device="cpu", precision="fp32", num_workers=0)
    photo(4).save(tmp_path / "p.png")
    img = Image.open(tmp_path / "p.png")
    vectors = enc.encode([str(tmp_path / "p.png"), (tmp_path / "p.png").read_bytes(), img, np.asarray(img)])
    assert np.abs(vectors - vectors[0]).max() < 1e-5


def test_bad_arguments_and_bad_images(tiny_models):
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        Encoder(str(tiny_models["vit"]), device="tpu")
    with pytest.raises(ValueError, match="batch_size"):
        Encoder(str(tiny_models["vit"]), batch_size=0)
    enc = Encoder(str(tiny_models["vit"]), device="cpu", num_workers=0)
    with pytest.raises(ImageError, match="7 bytes"):
        enc.encode([photo(1), b"garbage"])


def test_file_stream_uses_workers_keeps_order_and_reports_bad_files(tiny_models, tmp_path):
    enc = Encoder(str(tiny_models["vit"]), device="cpu", precision="fp32", num_workers=2)
    paths = []
    for i in range(7):
        photo(i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "bad.jpg").write_text("nope")
    paths.insert(3, str(tmp_path / "bad.jpg"))
    results = list(enc.encode_files(paths, batch_size=3))
    assert [r.index for r in results] == list(range(8))
    assert results[3].vector is None and "not a recognised" in results[3].error
    good = [r for r in results if r.vector is not None]
    assert (good[0].width, good[0].height) == (96, 72)
    expected = enc.encode([r.path for r in good])
    np.testing.assert_allclose(np.stack([r.vector for r in good]), expected, atol=1e-5)


def test_workers_decode_small_chunks_while_the_model_gets_whole_batches(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr("vitsearch.embed.DECODE_CHUNK", 2)
    enc = Encoder(str(tiny_models["vit"]), device="cpu", precision="fp32", num_workers=2)
    paths = []
    for i in range(9):
        photo(i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    paths.insert(4, str(tmp_path / "bad.png"))
    sizes = []
    embed = enc.embed_pixels
    monkeypatch.setattr(enc, "embed_pixels", lambda batch: sizes.append(len(batch)) or embed(batch))
    results = list(enc.encode_files(paths, batch_size=4))
    assert [r.index for r in results] == list(range(10))
    assert results[4].vector is None and results[4].error
    assert sizes == [4, 4, 1]  # chunks of 2 files assembled into model batches of 4 good images
    good = [r for r in results if r.vector is not None]
    np.testing.assert_allclose(np.stack([r.vector for r in good]), enc.encode([r.path for r in good]), atol=1e-5)


def test_decode_look_ahead_is_bounded_in_bytes_and_never_below_two_batches(tiny_models):
    from dataclasses import replace

    from vitsearch.embed import LOOKAHEAD_BYTES, LOOKAHEAD_MAX

    enc = Encoder(str(tiny_models["vit"]), device="cpu", lazy=True)

    def at(px: int) -> Encoder:
        enc.spec = replace(enc.spec, preprocessing=enc.spec.preprocessing.at_size(px))
        return enc

    assert at(112)._lookahead(32) == LOOKAHEAD_MAX == 1024  # 37 KB an image: the count is the limit
    assert at(224)._lookahead(32) == LOOKAHEAD_BYTES // (3 * 224 * 224) == 445
    assert at(518)._lookahead(32) == 83
    assert at(518)._lookahead(256) == 512  # never less than two model batches


def test_bf16_agrees_with_fp32_on_the_bundled_model(bundled_encoder):
    images = [SAMPLES / "photos" / f"{n}.jpg" for n in ("chelsea", "rocket", "coins")] + [
        SAMPLES / "fashion" / "bag_1.png", SAMPLES / "emoji" / "animals_owl.png"]
    fp32 = Encoder(bundled_encoder.spec, device="cpu", precision="fp32", num_workers=0).encode(images)
    bf16 = Encoder(bundled_encoder.spec, device="cpu", precision="bf16", num_workers=0).encode(images)
    assert (np.sum(fp32 * bf16, axis=1) >= 0.99).all()


def test_jpeg_draft_keeps_the_embedding(bundled_encoder, tmp_path):
    big = Image.open(SAMPLES / "photos" / "astronaut.jpg").resize((2048, 2048), Image.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=92)
    drafted = bundled_encoder.encode(str(tmp_path / "big.jpg"))
    full = bundled_encoder.encode(Image.open(tmp_path / "big.jpg").convert("RGB"))  # PIL input: no draft
    assert float(drafted @ full) >= 0.99


def _child_after_worker_init(lock_path, queue):
    import os

    from vitsearch.embed import worker_init

    worker_init(0)
    open_fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")]
    queue.put(any(target == lock_path for target in open_fds))


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="Linux /proc and prctl")
def test_decode_workers_let_go_of_an_inherited_milvus_lite_lock(tmp_path):
    import fcntl
    import multiprocessing

    lock_dir = tmp_path / "store.db"
    lock_dir.mkdir()
    fh = open(lock_dir / "LOCK", "w")  # noqa: SIM115 - held (locked) until the test ends
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_after_worker_init, args=(str(lock_dir / "LOCK"), queue))
    child.start()
    assert queue.get(timeout=30) is False
    child.join(30)
    fh.close()


def test_a_lazy_encoder_loads_its_model_on_first_use_and_embeds_the_same(tmp_path):
    from helpers import tiny_model

    model = tiny_model(tmp_path / "m")
    paths = []
    for i in range(5):
        photo(i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    eager = Encoder(str(model), device="cpu", precision="fp32", num_workers=1, batch_size=2)
    lazy = Encoder(str(model), device="cpu", precision="fp32", num_workers=1, batch_size=2, lazy=True)
    assert lazy._backbone is None
    got = [r.vector for r in lazy.encode_files(paths)]
    assert lazy._backbone is not None
    np.testing.assert_allclose(np.stack(got), eager.encode(paths), atol=1e-5)
