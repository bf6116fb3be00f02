"""The offline teacher cache: run the teacher once, store sparse targets, train students from them.

A cache is a folder that ``datasets`` loads (``load_dataset(DIR)``): parquet shards
``data/train-XXXXX-of-YYYYY.parquet`` (one row per encoded training row), ``cache_info.json``
(everything a run must match: teacher, tokenizer, data, encoding, temperature, mode) and a
dataset card. Targets are stored for the *target* positions ``i >= 1`` of a row whose section is
cached (the distribution of token ``i`` given tokens ``< i``), in order, so a run finds the entry of
position ``i`` by counting cached positions before it: no index is stored.

Per row, byte columns (little-endian):

* ``sampled`` — ``n_targets`` (``uint8`` per position: distinct ids drawn), ``targets`` (a bit
  stream of ``(id, count - 1)`` pairs, ``id_bits`` + ``count_bits`` bits each), ``entropy``
  (``float16`` per position, nats);
* ``topk`` — ``targets`` (``K`` ids per position, ``id_bits`` each), ``logprobs`` (``float16``,
  ``K`` per position), ``tail_logmass`` (``float16`` per position).

``id_bits = ceil(log2 V)`` (18 for Qwen2.5's 151,936), ``count_bits = ceil(log2 S)``: at ``S = 12``
a position costs at most ``12 x 22 bits + 3 B = 36 B`` (a uniform teacher; a peaked one draws
fewer distinct ids). See :mod:`hf_cot_distill.losses.cached` for the losses these targets feed.

A build in progress writes its shards under the hidden ``.partial/data/`` (``load_dataset`` never
reads hidden folders, and the pending card's ``data_files`` names ``data/`` only, so an interrupted
build is an error to load, never a smaller dataset) and moves them to ``data/`` in one rename when
every shard is there; a re-run with the same ``--out`` resumes from the shards already built.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hf_cot_distill.core.sections import CONTENT_SECTION_NAMES, SECTION_NAMES, Section
from hf_cot_distill.core.validation import check_choice, check_float, check_int
from hf_cot_distill.losses.cached import (
    CACHE_MODES,
    PAD_ID,
    CachedTargets,
    sampled_chunk_targets,
    topk_chunk_targets,
)
from hf_cot_distill.losses.chunked import default_chunk_size, gather_zero3
from hf_cot_distill.models import heads

CACHE_INFO = "cache_info.json"
FORMAT_VERSION = 1
SHARD_PATTERN = "train-{shard:05d}-of-{n_shards:05d}.parquet"
PARTIAL = ".partial"  # an unfinished build's shards (a hidden folder: `load_dataset` skips it)


@dataclass(frozen=True)
class CacheSettings:
    """How a cache is built. ``sections``: the sections whose positions are cached (names among
    ``prompt``/``cot``/``answer``); ``samples`` (sampled) or ``k`` (topk); ``temperature`` of the
    teacher distribution; ``seed`` of the draws (per shard, so shards are reproducible alone)."""

    mode: str = "sampled"
    samples: int = 12
    k: int = 64
    temperature: float = 1.0
    sections: tuple[str, ...] = CONTENT_SECTION_NAMES
    seed: int = 0
    rows_per_shard: int = 256
    batch_size: int = 8

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, CACHE_MODES)
        check_int("samples", self.samples, minimum=1, maximum=255)
        check_int("k", self.k, minimum=1)
        check_float("temperature", self.temperature, minimum=0.0, min_open=True)
        check_int("seed", self.seed, minimum=0)
        check_int("rows_per_shard", self.rows_per_shard, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        sections = tuple(self.sections)
        if not sections:
            raise ValueError(
                "sections=(): must name at least one section; fix: e.g. ('cot',) or ('prompt', 'cot', 'answer')."
            )
        for name in sections:
            check_choice("sections", name, CONTENT_SECTION_NAMES)
        object.__setattr__(self, "sections", tuple(s for s in CONTENT_SECTION_NAMES if s in sections))

    @property
    def section_ids(self) -> tuple[int, ...]:
        return tuple(int(Section[s.upper()]) for s in self.sections)

    def layout(self, vocab_size: int) -> dict[str, int]:
        """Bit widths of the packed columns for ``vocab_size``."""
        id_bits = max(1, math.ceil(math.log2(vocab_size)))
        count_bits = max(1, math.ceil(math.log2(self.samples))) if self.samples > 1 else 0
        return {"id_bits": id_bits, "count_bits": count_bits}


# ---------------------------------------------------------------------------------------------
# Bit packing
# ---------------------------------------------------------------------------------------------


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """``values`` (non-negative ints ``< 2**bits``) as a little-endian bit stream."""
    values = np.asarray(values, dtype=np.uint64).ravel()
    if bits == 0 or values.size == 0:
        return b""
    if values.size and int(values.max()) >= 1 << bits:
        raise ValueError(f"pack_bits: value {int(values.max())} does not fit in {bits} bits.")
    shifts = np.arange(bits, dtype=np.uint64)
    matrix = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(matrix.ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """The ``count`` ``bits``-wide ints of a stream written by :func:`pack_bits` (``int64``)."""
    if bits == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    need = -(-count * bits // 8)
    if len(data) < need:
        raise ValueError(f"packed stream of {len(data)} bytes, expected {need} for {count} x {bits} bits.")
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    weights = (np.uint64(1) << np.arange(bits, dtype=np.uint64)).astype(np.int64)
    return flat.reshape(count, bits).astype(np.int64) @ weights


# ---------------------------------------------------------------------------------------------
# Fingerprints: what a run must share with the cache it trains from
# ---------------------------------------------------------------------------------------------


def fingerprint_model_folder(path: str | os.PathLike) -> str:
    """sha256 over ``config.json`` and, per ``*.safetensors`` file, its size, header and first and
    last MiB: cheap for a 15 GB teacher, and different for two checkpoints of one architecture."""
    folder = Path(path)
    h = hashlib.sha256()
    config = folder / "config.json"
    h.update(config.read_bytes() if config.is_file() else b"")
    for file in sorted(folder.glob("*.safetensors")):
        size = file.stat().st_size
        h.update(file.name.encode() + size.to_bytes(8, "little"))
        with open(file, "rb") as fh:
            head = fh.read(8)
            header_len = int.from_bytes(head, "little") if len(head) == 8 else 0
            h.update(fh.read(min(header_len, size)))
            h.update(fh.read(2**20))
            fh.seek(max(0, size - 2**20))
            h.update(fh.read(2**20))
    return h.hexdigest()


def fingerprint_tokenizer(tokenizer: Any) -> str | None:
    """sha256 of the vocabulary (token -> id) and the special tokens; ``None`` without a tokenizer."""
    if tokenizer is None:
        return None
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = sorted(getattr(tokenizer, "all_special_tokens", []))
    return hashlib.sha256(json.dumps([vocab, special], ensure_ascii=False).encode()).hexdigest()


def fingerprint_rows(dataset: Any) -> str:
    """sha256 over every row's ``input_ids`` and ``section_ids`` (int64), in order."""
    h = hashlib.sha256()
    for batch in dataset.select_columns(["input_ids", "section_ids"]).iter(batch_size=512):
        for ids, secs in zip(batch["input_ids"], batch["section_ids"]):
            h.update(np.asarray(ids, dtype=np.int64).tobytes())
            h.update(b"|")
            h.update(np.asarray(secs, dtype=np.int64).tobytes())
            h.update(b"\n")
    return h.hexdigest()


def count_tokens(dataset: Any) -> int:
    """Tokens of every row's ``input_ids`` (what a build forwards through the teacher)."""
    return sum(
        len(ids)
        for batch in dataset.select_columns(["input_ids"]).iter(batch_size=1024)
        for ids in batch["input_ids"]
    )


def build_flops(
    teacher_body_params: int, teacher_hidden: int, vocab_size: int, tokens: int, positions: int
) -> int:
    """Counted FLOPs of a cache build (:mod:`hf_cot_distill.models.compute`'s teacher terms): the
    body over every token of every row once, the lm_head over the cached positions."""
    from hf_cot_distill.models.compute import kd_step_flops

    return kd_step_flops(
        student_body_params=0, student_hidden=0, vocab_size=vocab_size, tokens_forwarded=tokens,
        head_positions=0, teacher_body_params=teacher_body_params, teacher_hidden=teacher_hidden,
        kd_positions=positions,
    )[1]  # fmt: skip


def cached_positions(section_ids: np.ndarray, section_set: Iterable[int]) -> np.ndarray:
    """Target positions ``i >= 1`` of a row whose section is cached (``int64``, increasing)."""
    section_ids = np.asarray(section_ids, dtype=np.int64)
    keep = np.isin(section_ids, list(section_set))
    keep[:1] = False
    return np.nonzero(keep)[0]


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


@dataclass
class ShardStats:
    """What one shard holds (summed into the card)."""

    rows: int = 0
    positions: int = 0
    positions_by_section: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(CONTENT_SECTION_NAMES, 0)
    )
    targets: int = 0  # distinct ids (sampled) or ids (topk) stored
    payload_bytes: int = 0
    tail_mass_sum: float = 0.0
    tail_mass_max: float = 0.0

    def add(self, other: ShardStats) -> ShardStats:
        out = ShardStats(
            self.rows + other.rows,
            self.positions + other.positions,
            {k: self.positions_by_section[k] + other.positions_by_section[k] for k in CONTENT_SECTION_NAMES},
            self.targets + other.targets,
            self.payload_bytes + other.payload_bytes,
            self.tail_mass_sum + other.tail_mass_sum,
            max(self.tail_mass_max, other.tail_mass_max),
        )
        return out


class _ChunkBuffers:
    """The two ``(chunk, V)`` float32 buffers of the build (teacher log-probs, scratch), allocated
    once per shard and reused by every chunk: the build's memory does not grow with row length."""

    def __init__(self, chunk: int, vocab_size: int, device: torch.device) -> None:
        self.chunk = chunk
        self.logp = torch.empty((chunk, vocab_size), dtype=torch.float32, device=device)
        self.scratch = torch.empty((chunk, vocab_size), dtype=torch.float32, device=device)


def _chunk_logprobs(
    h: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, buffers: _ChunkBuffers
) -> Tensor:
    """Teacher log-probs at ``temperature`` of the ``m`` hidden states ``h`` (``(m, H)``), written
    into ``buffers.logp[:m]`` (float32) and returned: the lm_head product straight into the buffer
    when the teacher is float32 (else through one ``(m, V)`` product in its dtype), the division
    by ``T`` only when ``T != 1``, ``log_softmax`` in place."""
    out = buffers.logp[: h.shape[0]]
    if weight.dtype == torch.float32 and h.dtype == torch.float32:
        if bias is None:
            torch.mm(h, weight.t(), out=out)
        else:
            torch.addmm(bias, h, weight.t(), out=out)
    else:
        out.copy_(h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t()))
    if temperature != 1.0:
        out.div_(temperature)
    return torch.log_softmax(out, 1, out=out)


def _row_targets(
    hidden: Tensor,
    positions: np.ndarray,
    weight: Tensor,
    bias: Tensor | None,
    settings: CacheSettings,
    layout: dict[str, int],
    generator: torch.Generator,
    stats: ShardStats,
    buffers: _ChunkBuffers,
) -> dict[str, bytes]:
    """Pack the targets of one row's cached ``positions`` from its teacher last hidden states
    ``hidden`` (``(L, H)``; the state at ``i - 1`` predicts token ``i``).

    Chunk by chunk (``buffers.chunk`` positions): the teacher log-probs of a chunk live in a
    ``(chunk, V)`` buffer, are reduced to the chunk's targets (``(chunk, S)`` or ``(chunk, K)``
    plus one value per position) and dropped, so no ``(P, V)`` tensor exists for a row of ``P``
    positions. The draws of a row consume ``generator`` position after position, exactly as one
    call over the whole row would: the targets do not depend on the chunk size."""
    sampled = settings.mode == "sampled"
    k = min(settings.k, weight.shape[0])
    parts: list[tuple[Tensor, ...]] = []
    for c in range(0, len(positions), buffers.chunk):
        idx = torch.as_tensor(positions[c : c + buffers.chunk] - 1, device=hidden.device)
        logp = _chunk_logprobs(hidden.index_select(0, idx), weight, bias, settings.temperature, buffers)
        if sampled:
            scratch = buffers.scratch[: logp.shape[0]]
            ids, counts, n, ent = sampled_chunk_targets(logp, settings.samples, generator, scratch)
            parts.append((ids.cpu(), counts.cpu(), n.cpu(), ent.cpu()))
        else:
            parts.append(tuple(t.cpu() for t in topk_chunk_targets(logp, k)))
    if not parts:  # a row without a cached position
        width = settings.samples if sampled else k
        empty_ids = torch.zeros((0, width), dtype=torch.long)
        parts.append(
            (empty_ids, empty_ids, torch.zeros(0, dtype=torch.long), torch.zeros(0))
            if sampled
            else (empty_ids, torch.zeros((0, width)), torch.zeros(0))
        )
    columns = [torch.cat(col) for col in zip(*parts, strict=True)]
    if sampled:
        ids, counts, n, ent = columns
        valid = ids >= 0
        real_ids = ids[valid].numpy()
        real_counts = counts[valid].numpy() - 1
        merged = real_ids | (real_counts << layout["id_bits"]) if layout["count_bits"] else real_ids
        out = {
            "n_targets": n.to(torch.uint8).numpy().tobytes(),
            "targets": pack_bits(merged, layout["id_bits"] + layout["count_bits"]),
            "entropy": ent.to(torch.float16).numpy().tobytes(),
        }
        stats.targets += int(n.sum())
    else:
        ids, values, tail = columns
        out = {
            "targets": pack_bits(ids.numpy(), layout["id_bits"]),
            "logprobs": values.to(torch.float16).numpy().tobytes(),
            "tail_logmass": tail.to(torch.float16).numpy().tobytes(),
        }
        mass = tail.double().exp()
        stats.targets += ids.numel()
        stats.tail_mass_sum += float(mass.sum())
        stats.tail_mass_max = max(stats.tail_mass_max, float(mass.max()) if mass.numel() else 0.0)
    stats.payload_bytes += sum(len(v) for v in out.values())
    return out


def _generator(device: torch.device, seed: int) -> torch.Generator:
    """The draws' generator: on the CPU for a CPU teacher (the stream every CPU build shares), on
    the teacher's accelerator otherwise (drawing there keeps the log-probs on it: a GPU build and a
    CPU build of one cache draw different, equally distributed, ids)."""
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def build_shard(
    teacher: torch.nn.Module,
    rows: Sequence[dict[str, Any]],
    row_offset: int,
    settings: CacheSettings,
    vocab_size: int,
    shard_seed: int,
    pad_token_id: int = 0,
    chunk_size: int | None = None,
) -> tuple[list[dict[str, Any]], ShardStats]:
    """Teacher targets of ``rows`` (``input_ids``, ``section_ids``): one record per row, in order.

    The teacher runs batch by batch (right-padded, ``settings.batch_size`` rows); its lm_head is
    applied ``chunk_size`` positions at a time (default: two float32 ``(chunk, V)`` buffers
    within :data:`~hf_cot_distill.losses.chunked.BUFFER_BUDGET_BYTES`) to the cached positions
    only, and each chunk is reduced to its targets before the next: never ``(N, V)`` logits for a
    batch, nor ``(P, V)`` log-probs for a row."""
    layout = settings.layout(vocab_size)
    full_weight, full_bias = heads.lm_head_params(teacher)
    device = next(p.device for p in heads.unwrap_causal_lm(teacher).parameters())
    generator = _generator(device, shard_seed)
    chunk = default_chunk_size(vocab_size, 3) if chunk_size is None else chunk_size
    check_int("chunk_size", chunk, minimum=1, fix="pass an int >= 1, or None (automatic)")
    stats, records = ShardStats(), []
    buffers: _ChunkBuffers | None = None
    for start in range(0, len(rows), settings.batch_size):
        batch = rows[start : start + settings.batch_size]
        lengths = [len(r["input_ids"]) for r in batch]
        width = max(lengths)
        input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, r in enumerate(batch):
            input_ids[b, : lengths[b]] = torch.as_tensor(r["input_ids"], dtype=torch.long)
            mask[b, : lengths[b]] = 1
        hidden = heads.last_hidden_states(
            teacher, {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
        )
        if buffers is None:  # sized to the longest row seen so far: a short shard gets small buffers
            buffers = _ChunkBuffers(min(chunk, max(width, 1)), vocab_size, hidden.device)
        elif buffers.chunk < min(chunk, width):
            buffers = _ChunkBuffers(min(chunk, width), vocab_size, hidden.device)
        # a ZeRO-3 teacher's lm_head is partitioned: gathered for this batch's products, read only
        with gather_zero3([full_weight, full_bias]):
            weight = full_weight[:vocab_size]
            bias = full_bias[:vocab_size] if full_bias is not None else None
            for b, r in enumerate(batch):
                secs = np.asarray(r["section_ids"], dtype=np.int64)
                positions = cached_positions(secs, settings.section_ids)
                record = {"row": row_offset + start + b, "n_positions": len(positions)}
                for name in CONTENT_SECTION_NAMES:
                    record[f"n_{name}"] = int((secs[positions] == int(Section[name.upper()])).sum())
                record.update(
                    _row_targets(
                        hidden[b], positions, weight, bias, settings, layout, generator, stats, buffers
                    )
                )
                records.append(record)
                stats.rows += 1
                stats.positions += len(positions)
                for name in CONTENT_SECTION_NAMES:
                    stats.positions_by_section[name] += record[f"n_{name}"]
    return records, stats


def _schema(mode: str) -> Any:
    import pyarrow as pa

    columns = [("row", pa.int64()), ("n_positions", pa.int32())]
    columns += [(f"n_{name}", pa.int32()) for name in CONTENT_SECTION_NAMES]
    names = (
        ("n_targets", "targets", "entropy") if mode == "sampled" else ("targets", "logprobs", "tail_logmass")
    )
    return pa.schema(columns + [(n, pa.binary()) for n in names])


def write_shard(path: Path, records: list[dict[str, Any]], mode: str) -> None:
    """Write one shard atomically (a ``.tmp`` file renamed into place): an interrupted build
    leaves complete shards or none, never a truncated one ``load_dataset`` would read.

    Column statistics are kept for the integer columns only: for a packed byte column parquet
    would store min/max copies of the blobs (up to four per column chunk when they are short, as
    a peaked teacher's are: +25% on such a file), which no reader of a cache uses."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(mode)
    table = pa.Table.from_pylist(records, schema=schema)
    tmp = path.with_name(path.name + ".tmp")
    with_stats = [f.name for f in schema if not pa.types.is_binary(f.type)]
    pq.write_table(table, tmp, compression="none", write_statistics=with_stats)
    os.replace(tmp, path)


def shard_plan(n_rows: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` row ranges of the shards."""
    return (
        [(s, min(s + rows_per_shard, n_rows)) for s in range(0, max(n_rows, 1), rows_per_shard)]
        if n_rows
        else []
    )


def shard_path(root: Path, shard: int, n_shards: int, *, partial: bool = False) -> Path:
    """Shard ``shard`` of a finished cache (``data/``) or of a build in progress (``partial``)."""
    folder = root / PARTIAL / "data" if partial else root / "data"
    return folder / SHARD_PATTERN.format(shard=shard, n_shards=n_shards)


def publish_shards(out_dir: Path) -> None:
    """Move a finished build's shards from ``.partial/data/`` to ``data/`` (one rename), replacing
    a ``data/`` left by an unfinished build of an earlier layout."""
    import shutil

    staged, final = out_dir / PARTIAL / "data", out_dir / "data"
    if not staged.is_dir():
        return  # published already (a resumed run found nothing left to build)
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)
    shutil.rmtree(out_dir / PARTIAL)


def read_shard_rows(path: Path) -> int:
    """Rows of a complete shard, or ``ValueError`` naming the file if it cannot be read."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ValueError(
            f"teacher cache shard {path}: unreadable ({err}); fix: delete it and re-run cache-teacher."
        ) from err


def build_shards(
    teacher: torch.nn.Module,
    dataset: Any,
    out_dir: Path,
    settings: CacheSettings,
    vocab_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    pad_token_id: int = 0,
    progress: bool = True,
) -> tuple[ShardStats, list[int]]:
    """Build this rank's shards (shard ``i`` on rank ``i % world_size``), skipping complete ones
    (resume). Returns this rank's stats over the shards it built and the indices it skipped."""
    import time

    from tqdm.auto import tqdm

    plan = shard_plan(len(dataset), settings.rows_per_shard)
    (out_dir / PARTIAL / "data").mkdir(parents=True, exist_ok=True)
    total, skipped = ShardStats(), []
    mine = [i for i in range(len(plan)) if i % world_size == rank]
    bar = tqdm(
        total=sum(plan[i][1] - plan[i][0] for i in mine),
        unit="row",
        desc=f"teacher cache (rank {rank})",
        disable=not progress,
    )
    tokens, start_time = 0, time.perf_counter()
    for i in mine:
        start, stop = plan[i]
        path = shard_path(out_dir, i, len(plan), partial=True)
        if path.is_file() and read_shard_rows(path) == stop - start:
            skipped.append(i)
            bar.update(stop - start)
            continue
        rows = dataset.select(range(start, stop)).to_list()
        records, stats = build_shard(
            teacher, rows, start, settings, vocab_size, settings.seed * 1_000_003 + i, pad_token_id
        )
        write_shard(path, records, settings.mode)
        total = total.add(stats)
        tokens += sum(len(r["input_ids"]) for r in rows)
        bar.update(stop - start)
        bar.set_postfix(tokens_per_s=f"{tokens / max(time.perf_counter() - start_time, 1e-9):,.0f}")
    bar.close()
    return total, skipped


def shard_stats(out_dir: Path, settings: CacheSettings, vocab_size: int) -> ShardStats:
    """Stats of a finished cache, read back from its shards (every rank's work counted once)."""
    import pyarrow.parquet as pq

    stats = ShardStats()
    for path in sorted((out_dir / "data").glob("train-*.parquet")):
        table = pq.read_table(path)
        for rec in table.to_pylist():
            stats.rows += 1
            stats.positions += rec["n_positions"]
            for name in CONTENT_SECTION_NAMES:
                stats.positions_by_section[name] += rec[f"n_{name}"]
            payload = sum(len(rec[k]) for k in rec if isinstance(rec[k], bytes))
            stats.payload_bytes += payload
            if settings.mode == "sampled":
                stats.targets += int(np.frombuffer(rec["n_targets"], dtype=np.uint8).sum())
            else:
                mass = np.exp(np.frombuffer(rec["tail_logmass"], dtype=np.float16).astype(np.float64))
                stats.targets += rec["n_positions"] * min(settings.k, vocab_size)
                stats.tail_mass_sum += float(mass.sum())
                stats.tail_mass_max = max(stats.tail_mass_max, float(mass.max()) if mass.size else 0.0)
    return stats


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class TeacherCache:
    """A built cache, opened for training: ``info`` (``cache_info.json``) and the targets of any
    ``(row, target position)`` of the encoded training rows it was built from.

    Shards are read as Arrow tables (memory-mapped by pyarrow); rows are decoded on demand and
    the last few kept (a batch touches each row once)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        info_file = self.path / CACHE_INFO
        if not info_file.is_file():
            where = "is not a folder" if not self.path.is_dir() else f"has no {CACHE_INFO}"
            raise ValueError(
                f"teacher_cache={str(path)!r} {where}; fix: build one with `hf-cot-distill cache-teacher --config "
                "RECIPE --out DIR` and point teacher_cache at DIR."
            )
        try:
            self.info = json.loads(info_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"teacher cache {info_file}: not valid JSON ({err}); fix: rebuild the cache."
            ) from err
        if self.info.get("format_version") != FORMAT_VERSION or not self.info.get("complete"):
            raise ValueError(
                f"teacher cache {self.path}: format_version {self.info.get('format_version')!r}, complete "
                f"{self.info.get('complete')!r}; fix: finish it (re-run cache-teacher with the same --out resumes) "
                f"or rebuild it with this version (format {FORMAT_VERSION})."
            )
        self.settings = CacheSettings(**self.info["settings"])
        self.vocab_size = int(self.info["vocab_size"])
        self.layout = self.settings.layout(self.vocab_size)
        n_rows, n_shards = int(self.info["rows"]), int(self.info["shards"])
        self._tables = []
        for i, (start, stop) in enumerate(shard_plan(n_rows, self.settings.rows_per_shard)):
            file = shard_path(self.path, i, n_shards)
            if not file.is_file():
                raise ValueError(
                    f"teacher cache {self.path}: shard {file.name} is missing ({n_shards} expected); fix: re-run "
                    "cache-teacher with the same --out to rebuild it."
                )
            try:
                table = pq.read_table(file, memory_map=True)
            except Exception as err:
                raise ValueError(
                    f"teacher cache shard {file}: unreadable ({err}); fix: delete it and re-run cache-teacher with "
                    "the same --out."
                ) from err
            rows = table.column("row").to_pylist()
            if rows != list(range(start, stop)):
                raise ValueError(
                    f"teacher cache shard {file}: holds rows {rows[:3]}... not {start}..{stop - 1} (truncated or "
                    "from another build); fix: delete it and re-run cache-teacher with the same --out."
                )
            self._tables.append(table)
        self.rows = n_rows
        self._decoded: dict[int, tuple[np.ndarray, ...]] = {}

    @property
    def section_ids(self) -> tuple[int, ...]:
        return self.settings.section_ids

    def _record(self, row: int) -> dict[str, Any]:
        if not 0 <= row < self.rows:
            raise ValueError(
                f"row {row}: the cache holds rows 0..{self.rows - 1}; fix: train on the rows it was built from."
            )
        table = self._tables[row // self.settings.rows_per_shard]
        return {k: table.column(k)[row % self.settings.rows_per_shard].as_py() for k in table.column_names}

    def decode(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids (P, K), weights (P, K), extra (P,))`` of a row's cached positions, in order
        (``extra``: entropy (sampled) or tail log-mass (topk)); ids ``-1`` / weights 0 pad."""
        if row in self._decoded:
            return self._decoded[row]
        rec = self._record(row)
        p = int(rec["n_positions"])
        if self.settings.mode == "sampled":
            n = np.frombuffer(rec["n_targets"], dtype=np.uint8).astype(np.int64)
            if len(n) != p:
                raise ValueError(
                    f"teacher cache {self.path}: row {row} has {len(n)} position counts, {p} expected."
                )
            width = self.layout["id_bits"] + self.layout["count_bits"]
            merged = unpack_bits(rec["targets"], width, int(n.sum()))
            ids_flat = merged & ((1 << self.layout["id_bits"]) - 1)
            counts_flat = (merged >> self.layout["id_bits"]) + 1
            k = int(n.max()) if p else 1
            ids = np.full((p, k), PAD_ID, dtype=np.int64)
            weights = np.zeros((p, k), dtype=np.float32)
            slot = np.arange(len(ids_flat)) - np.repeat(np.cumsum(n) - n, n)
            pos = np.repeat(np.arange(p), n)
            ids[pos, slot] = ids_flat
            weights[pos, slot] = counts_flat / self.settings.samples
            extra = np.frombuffer(rec["entropy"], dtype=np.float16).astype(np.float32)
        else:
            k = min(self.settings.k, self.vocab_size)
            ids = unpack_bits(rec["targets"], self.layout["id_bits"], p * k).reshape(p, k)
            weights = np.exp(np.frombuffer(rec["logprobs"], dtype=np.float16).astype(np.float32)).reshape(
                p, k
            )
            extra = np.frombuffer(rec["tail_logmass"], dtype=np.float16).astype(np.float32)
        if len(self._decoded) > 64:
            self._decoded.pop(next(iter(self._decoded)))
        self._decoded[row] = (ids, weights, extra)
        return ids, weights, extra


def write_info(out_dir: Path, info: dict[str, Any]) -> None:
    tmp = out_dir / (CACHE_INFO + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
    os.replace(tmp, out_dir / CACHE_INFO)


def settings_dict(settings: CacheSettings) -> dict[str, Any]:
    out = asdict(settings)
    out["sections"] = list(settings.sections)
    return out


def iter_shard_files(out_dir: Path) -> Iterator[Path]:
    yield from sorted((out_dir / "data").glob("train-*.parquet"))


# ---------------------------------------------------------------------------------------------
# Training from a cache
# ---------------------------------------------------------------------------------------------


def check_cache_fits(cache: TeacherCache, args: Any, supervision: Any, vocab_size: int) -> None:
    """Refuse, naming the field and both values, a run the cache cannot serve: another temperature
    or vocabulary, or KD on sections the cache did not store."""
    if not math.isclose(float(args.temperature), cache.settings.temperature, rel_tol=1e-9):
        raise ValueError(
            f"temperature={args.temperature!r}: the teacher cache {cache.path} was built at temperature "
            f"{cache.settings.temperature!r}; fix: temperature: {cache.settings.temperature!r}, or build a cache at "
            f"{args.temperature!r}."
        )
    if vocab_size != cache.vocab_size:
        raise ValueError(
            f"vocabulary: this run's is {vocab_size} tokens, the teacher cache {cache.path} holds ids of a "
            f"{cache.vocab_size}-token vocabulary; fix: the tokenizer the cache was built with "
            f"(tokenizer fingerprint {cache.info.get('tokenizer_fingerprint')})."
        )
    kd_sections = {
        SECTION_NAMES[s] for s in range(len(SECTION_NAMES)) if s and supervision.for_section(s).kd_weight > 0
    }
    missing = sorted(kd_sections - set(cache.settings.sections))
    if missing:
        counts = cache.info.get("stats", {}).get("positions_by_section", {})
        raise ValueError(
            f"supervision_preset={args.supervision_preset!r} distils {sorted(kd_sections)} but the teacher cache "
            f"{cache.path} holds only {list(cache.settings.sections)} (positions cached: {counts}); fix: a cache "
            f"built with --positions {','.join(sorted(kd_sections | set(cache.settings.sections)))}, or a supervision "
            "preset within the cached sections."
        )


def with_cache_rows(dataset: Any, cache: TeacherCache) -> Any:
    """``dataset`` with a ``cache_row`` column (its row index, the cache's key); its length must
    be the cache's."""
    if dataset is None:
        return None
    if len(dataset) != cache.rows:
        raise ValueError(
            f"train_dataset: {len(dataset)} rows but the teacher cache {cache.path} was built on {cache.rows}; fix: the "
            "same data and encoding settings (and max_train_samples) as the cache, or rebuild the cache."
        )
    if "cache_row" in dataset.column_names:
        return dataset
    return dataset.add_column("cache_row", list(range(len(dataset))))


def _segments(inputs: dict[str, Tensor]) -> Iterator[tuple[int, int, int]]:
    """``(batch row, first column, stop column)`` of each sample of a padded or packed batch."""
    token_index = inputs["token_index"]
    if "position_ids" in inputs and "attention_mask" not in inputs:  # packed
        pos = inputs["position_ids"][0]
        starts = torch.nonzero(pos == 0).squeeze(1).tolist() + [pos.shape[0]]
        for a, b in zip(starts[:-1], starts[1:]):
            if bool((token_index[0, a:b] >= 0).any()):
                yield 0, a, b
        return
    for r in range(token_index.shape[0]):
        real = torch.nonzero(token_index[r] >= 0).squeeze(1)
        if real.numel():
            yield r, int(real[0]), int(real[-1]) + 1


def batch_targets(cache: TeacherCache, inputs: dict[str, Tensor], kd_weights: Tensor) -> CachedTargets:
    """The :class:`CachedTargets` of a collated batch's shifted positions ``(B * (T - 1))``:
    position ``(r, c - 1)`` predicts token ``c``, whose entry is looked up by its original index.

    Refused: a KD position after a gap in the kept tokens (a truncation that is not a prefix gives
    the student another context than the teacher had when the cache was built)."""
    token_index, section_ids = inputs["token_index"].cpu(), inputs["section_ids"].cpu()
    rows = inputs["cache_row"].cpu().tolist()
    width = token_index.shape[1] - 1
    kd = (kd_weights > 0).cpu()
    n_total = token_index.shape[0] * width
    ids = torch.full((n_total, 1), PAD_ID, dtype=torch.long)
    weights = torch.zeros((n_total, 1), dtype=torch.float32)
    extra = torch.zeros(n_total, dtype=torch.float32)
    segments = list(_segments(inputs))
    if len(segments) != len(rows):
        raise ValueError(
            f"batch: {len(segments)} samples but {len(rows)} cache_row values; fix: SectionCollator(carry_source_positions=True)."
        )
    for (r, a, b), row in zip(segments, rows):
        cols = torch.arange(a + 1, b)
        wanted = cols[kd[r, cols - 1]]
        if wanted.numel() == 0:
            continue
        ti = token_index[r, a:b].numpy()
        prefix = int(np.argmin(np.append(ti == np.arange(len(ti)), False)))
        if int(wanted.max()) - a >= prefix:
            raise ValueError(
                f"truncation: the tokens kept of row {row} are not a prefix of it (token {ti[prefix]} follows "
                f"{'the start' if prefix == 0 else f'token {ti[prefix - 1]}'}) before a KD position; the teacher cache "
                "holds the teacher on whole rows, so there the student's context differs from the teacher's; fix: a "
                "prefix truncation (lead_span_proportion, keep_first), or the online teacher for this policy."
            )
        originals = ti[(wanted - a).numpy()]
        cached = cached_positions(section_ids[r, a : a + prefix].numpy(), cache.section_ids)
        ranks = np.searchsorted(cached, originals)
        if (ranks >= len(cached)).any() or (cached[np.minimum(ranks, len(cached) - 1)] != originals).any():
            raise ValueError(
                f"teacher cache {cache.path}: row {row} needs targets at positions the cache did not store (sections "
                f"{list(cache.settings.sections)}); fix: a cache built over the distilled sections."
            )
        d_ids, d_w, d_extra = cache.decode(row)
        if d_ids.shape[1] > ids.shape[1]:
            grow = d_ids.shape[1] - ids.shape[1]
            ids = torch.cat([ids, torch.full((n_total, grow), PAD_ID, dtype=torch.long)], 1)
            weights = torch.cat([weights, torch.zeros((n_total, grow))], 1)
        flat = r * width + (wanted - 1)
        ids[flat, : d_ids.shape[1]] = torch.as_tensor(d_ids[ranks])
        weights[flat, : d_w.shape[1]] = torch.as_tensor(d_w[ranks])
        extra[flat] = torch.as_tensor(d_extra[ranks])
    if cache.settings.mode == "sampled":
        return CachedTargets("sampled", ids, weights, entropy=extra, temperature=cache.settings.temperature)
    return CachedTargets("topk", ids, weights, tail_logmass=extra, temperature=cache.settings.temperature)
