"""Visual results: one self-contained HTML page (thumbnails embedded) or a PNG contact sheet."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw

from .images import load_image

THUMB = 192


def thumbnail(source, size: int = THUMB) -> Image.Image:
    """A thumbnail that fits ``size``²; a grey tile when the image cannot be read (e.g. it is gone)."""
    try:
        img = load_image(source, draft=(size, size))
        scale = size / max(img.size)  # small pictures (e.g. 28 px) are enlarged to the tile too
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    except Exception:  # noqa: BLE001 - a report never fails on one image
        tile = Image.new("RGB", (size, size), (200, 200, 200))
        ImageDraw.Draw(tile).text((8, size // 2 - 6), "unreadable", fill=(90, 90, 90))
        return tile


def _data_uri(source, size: int = THUMB) -> str:
    buf = io.BytesIO()
    thumbnail(source, size).save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
section{margin-bottom:32px}h2{font-size:15px;font-weight:600;word-break:break-all}
.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:200px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:4px}
figure.query{border:2px solid #2463eb}figure.keep{border:2px solid #16a34a}
img{width:192px;height:192px;object-fit:contain;display:block;margin:auto}
figcaption{font-size:11px;word-break:break-all;padding:4px 2px}
"""


def _page(title: str, sections: list[str]) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def _figure(source, caption: str, css: str = "") -> str:
    return (
        f"<figure class='{css}'><img src='{_data_uri(source)}' alt=''>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def query_html(results: Sequence[tuple[str, list]], title: str = "vitsearch results") -> str:
    """A page with each query image and its hits (rank, score, path and metadata)."""
    sections = []
    for query, hits in results:
        figures = [_figure(query, f"query: {query}", "query")]
        for hit in hits:
            extra = ", ".join(f"{k}={v}" for k, v in hit.metadata.items() if k not in ("sha256", "mtime", "size"))
            figures.append(_figure(hit.path, f"#{hit.rank}  {hit.score:.4f}  {hit.path}  {extra}"))
        sections.append(f"<section><h2>{html.escape(str(query))}</h2><div class='grid'>{''.join(figures)}</div></section>")
    return _page(title, sections)


def dups_html(groups: Sequence, title: str = "vitsearch duplicates") -> str:
    """A page with each duplicate group, its suggested keeper outlined."""
    sections = []
    for n, group in enumerate(groups, start=1):
        kind = "identical" if group.exact else f"similarity ≥ {group.similarity:.3f}"
        figures = [_figure(p, ("keep  " if p == group.keep else "") + p, "keep" if p == group.keep else "") for p in group.paths]
        sections.append(
            f"<section><h2>group {n}: {len(group.paths)} images, {kind}</h2><div class='grid'>{''.join(figures)}</div></section>"
        )
    return _page(title, sections or ["<p>No duplicates.</p>"])


def contact_sheet(rows: Sequence[Sequence[tuple[object, str]]], size: int = 160) -> Image.Image:
    """A PNG-ready grid: one row per list of (image, caption), each tile ``size``² with its caption.

    What ``vitsearch query --grid`` writes: a row per query, the query first, then its hits.

        >>> sheet = contact_sheet([[("photos/chelsea.jpg", "query"), ("photos/chelsea_small_bright.png", "1: 0.998")]])
        >>> sheet.size
        (338, 186)
        >>> sheet.save("hits.png")
    """
    if not rows:
        raise ValueError("nothing to draw")
    cols = max(len(r) for r in rows)
    pad, text = 6, 14
    sheet = Image.new("RGB", (cols * (size + pad) + pad, len(rows) * (size + text + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, (source, caption) in enumerate(row):
            tile = thumbnail(source, size)
            x, y = pad + c * (size + pad), pad + r * (size + text + pad)
            sheet.paste(tile, (x + (size - tile.width) // 2, y + (size - tile.height) // 2))
            draw.text((x, y + size + 1), caption[: size // 6], fill=(40, 40, 40))
    return sheet


def write_text(path: str | os.PathLike, content: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(content)
