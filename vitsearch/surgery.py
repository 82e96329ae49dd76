"""Weight surgery as pure functions: ``f(state_dict, ...) -> state_dict``, used by loading and training.

Learned absolute position embeddings belong to one patch grid. Training or serving a checkpoint at
another resolution resamples the grid part with 2-D bicubic interpolation and keeps the prefix
tokens (CLS, and DeiT's distillation token) as they are: the same operation DINOv2 applies on the
fly, done once so that the saved model is native at its new size.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

# state-dict keys of learned absolute position embeddings in transformers' ViT-family towers:
# ViT/DeiT/DINOv2 ``embeddings.position_embeddings`` (1, P+N, D); CLIP ``position_embedding.weight`` (P+N, D)
POSITION_KEY = re.compile(r"(^|\.)(position_embeddings|position_embedding\.weight)$")


def resample_position_embeddings(
    pos: torch.Tensor,
    new_grid: tuple[int, int],
    num_prefix: int | None = None,
    old_grid: tuple[int, int] | None = None,
    antialias: bool = False,
) -> torch.Tensor:
    """Resample a (1, P+N, D) or (P+N, D) position table to ``new_grid`` (rows, cols) patches.

    ``num_prefix`` tokens (CLS, distillation, registers) are kept unchanged. When neither it nor
    ``old_grid`` is given, the old grid is taken as the largest square that fits and the rest as prefix.
    ``antialias`` low-pass filters when shrinking (DINOv2 with registers resamples that way).
    """
    squeeze = pos.dim() == 2
    table = pos.unsqueeze(0) if squeeze else pos
    if table.dim() != 3:
        raise ValueError(f"position embeddings must be (1, tokens, dim) or (tokens, dim), not {tuple(pos.shape)}")
    tokens, dim = table.shape[1], table.shape[2]
    if old_grid is None:
        if num_prefix is None:
            side = math.isqrt(tokens)
            num_prefix = tokens - side * side
        side = math.isqrt(tokens - num_prefix)
        old_grid = (side, side)
    if num_prefix is None:
        num_prefix = tokens - old_grid[0] * old_grid[1]
    if num_prefix < 0 or old_grid[0] * old_grid[1] + num_prefix != tokens:
        raise ValueError(f"a table of {tokens} positions is not a {old_grid[0]}x{old_grid[1]} grid plus {num_prefix} prefix tokens")
    new_grid = (int(new_grid[0]), int(new_grid[1]))
    if min(new_grid) < 1:
        raise ValueError(f"the new patch grid must be at least 1x1, not {new_grid}")
    if tuple(old_grid) == new_grid:
        return pos.clone()
    prefix, grid = table[:, :num_prefix], table[:, num_prefix:]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False, antialias=antialias)
    grid = grid.to(table.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    out = torch.cat([prefix, grid], dim=1)
    return out.squeeze(0) if squeeze else out


def resize_position_embeddings(state_dict: dict, old_grid: int, new_grid: int) -> dict:
    """A copy of ``state_dict`` whose position tables hold a ``new_grid``² patch grid instead of ``old_grid``²."""
    out = dict(state_dict)
    found = False
    for key, value in state_dict.items():
        if POSITION_KEY.search(key) and isinstance(value, torch.Tensor) and value.dim() in (2, 3):
            tokens = value.shape[-2]
            out[key] = resample_position_embeddings(value, (new_grid, new_grid), tokens - old_grid * old_grid, (old_grid, old_grid))
            found = True
    if not found:
        raise ValueError("no learned position embeddings in this state dict")
    return out
