"""Steering a catalogued checkpoint: its model, stored subspaces and slices from its artifact, and
the interventions saved in the catalog.

An artifact names everything an intervention needs: the model's source and weights, the ``--data``
arguments and the settings that rebuilt its slices (the same prompts), and the write subspaces in
``bases.safetensors``. :func:`steer_artifact` opens it, parses the specs
(:mod:`circuit_atlas.ingest.steering`) and measures them, with no server; the catalog finds a
checkpoint's artifact through its subspaces' ``basis_uri`` (:meth:`~circuit_atlas.api.Catalog.steer`).
:func:`save_effects` keeps a run's measurements as ``(:Intervention)-[:ON]->(:Subspace|:Block)`` and
``-[:MEASURED_ON {loss_delta, loss_se, accuracy_delta, kl, flipped}]->(:DataSlice)``; the ``interventions``
query lists them.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import neo4j
import pandas as pd
import torch

from circuit_atlas import queries
from circuit_atlas.ingest.artifact import read_artifact
from circuit_atlas.ingest.channels import model_channels
from circuit_atlas.ingest.data import DataSlice
from circuit_atlas.ingest.pipeline import load_slices
from circuit_atlas.ingest.runnable import recorded_checkpoint
from circuit_atlas.ingest.situations import recorded_situation
from circuit_atlas.ingest.steering import Effect, Intervention, continuations, parse, steer

from .errors import UserError


class Steering:
    """One artifact opened for steering: its model, the ingest settings, its stored bases and its
    slices rebuilt (the same prompts; its discovered situations from the prompts and positions the
    manifest records), loaded once for every measurement and continuation."""

    def __init__(self, artifact: Path, device: str = "cpu"):
        self.artifact = Path(artifact)
        opened, self.model, self.config = recorded_checkpoint(self.artifact, device)
        self.bases = opened.bases()
        named = {part.name: part for part in load_slices(self.model, opened.manifest["data"], self.config)}
        situations = [entry for entry in opened.manifest["slices"] if entry.get("discovered")]
        self.slices = named | {entry["name"]: recorded_situation(entry, named) for entry in situations}

    def _slice(self, name: str) -> DataSlice:
        if name not in self.slices:
            raise UserError(f"No slice {name!r} in {self.artifact}; its slices are {', '.join(self.slices)}.")
        return self.slices[name]

    def parse(self, specs: list[str]) -> list[Intervention]:
        channels = model_channels(self.model.spec)
        return [parse(spec, self.bases, channels, list(self.slices)) for spec in specs]

    def effects(self, specs: list[str], slices: list[str] | None = None, seed: int = 0, top: int = 5) -> pd.DataFrame:
        """Every intervention of ``specs`` on every slice named in ``slices`` (default: all of them), one
        row per (intervention, slice): the :class:`~circuit_atlas.ingest.steering.Effect`'s fields."""
        if not specs:
            raise UserError("Give at least one intervention (--intervene SPEC).")
        chosen = [self._slice(name) for name in slices or list(self.slices)]
        interventions = self.parse(specs)
        with torch.no_grad():
            found = steer(
                self.model, self.bases, interventions, chosen, self.slices, self.config.batch_tokens, seed, top
            )
        return pd.DataFrame([asdict(e) for e in found], columns=[f.name for f in fields(Effect)])

    def continuations(
        self, specs: list[str], prompt: str, n_tokens: int, slice_name: str | None = None, seed: int = 0
    ) -> list[tuple[str, str]]:
        """``prompt`` (text, for a model with a tokenizer) continued by ``n_tokens`` sampled tokens, clean
        and under each intervention, with the same seed: ``(label, continuation)`` pairs, clean first.
        The interventions' statistics come from ``slice_name`` (default: the first slice)."""
        tokenizer = self.model.tokenizer
        if tokenizer is None:
            raise UserError(f"{self.model.spec.name} has no tokenizer, so it cannot continue a text prompt.")
        data = self._slice(slice_name or next(iter(self.slices)))
        ids = torch.tensor(tokenizer(prompt)["input_ids"], dtype=torch.long)
        if len(ids) == 0:
            raise UserError("The prompt is empty: give some text to continue.")
        rows = continuations(
            self.model,
            self.bases,
            self.parse(specs),
            ids,
            n_tokens,
            data,
            self.slices,
            self.config.batch_tokens,
            seed,
        )
        return [(label, tokenizer.decode(row[len(ids) :].tolist())) for label, row in zip(["clean", *specs], rows)]


def steer_artifact(
    artifact: Path,
    specs: list[str],
    slices: list[str] | None = None,
    device: str = "cpu",
    seed: int = 0,
    top: int = 5,
) -> pd.DataFrame:
    """:meth:`Steering.effects` of ``artifact`` opened once."""
    return Steering(artifact, device).effects(specs, slices, seed, top)


def effect_lines(effects: pd.DataFrame) -> list[str]:
    """A readable report: per slice, one line per intervention and its top tokens."""

    def tokens(entries) -> str:
        """Each token's id, and its text where it has some to show."""
        return ", ".join(f"{token} {text!r}" if text and text.strip() else str(token) for token, text, _ in entries)

    lines = []
    for name, rows in effects.groupby("slice", sort=False):
        lines.append(f"slice {name}:")
        for r in rows.itertuples():
            accuracy = "" if pd.isna(r.accuracy_delta) else f", accuracy {r.accuracy_delta:+.3f}"
            lines.append(
                f"  {r.spec}: loss {r.loss_delta:+.4f} ± {r.loss_se:.4f}{accuracy}, KL {r.kl:.4f}, "
                f"top token changed at {r.flipped:.1%}; "
                f"promotes {tokens(r.promoted)}; suppresses {tokens(r.suppressed)}"
            )
    return lines


def checkpoint_id(artifact: Path) -> str:
    """The catalog id (``model@label``) of the checkpoint ``artifact`` holds."""
    manifest = read_artifact(Path(artifact)).manifest
    return f"{manifest['model']['name']}@{manifest['checkpoint']['label']}"


def save_effects(driver: neo4j.Driver, database: str, checkpoint: str, effects: pd.DataFrame, seed: int) -> int:
    """Save every intervention of ``effects`` (rows of :func:`steer_artifact`) on ``checkpoint``, one
    write transaction; returns the measurements recorded. Its id is the checkpoint, the spec and the
    seed, so saving the same run again replaces it. The checkpoint must be complete in the catalog."""
    statement = queries.load_statements()["save_intervention"].text

    def save(tx: neo4j.ManagedTransaction) -> int:
        total = 0
        for spec, rows in effects.groupby("spec", sort=False):
            first = rows.iloc[0]
            intervention = {
                "id": f"{checkpoint}/{spec}/seed={seed}",
                "spec": spec,
                "seed": seed,
                "action": first["action"],
                "channel": first["channel"],
            }
            measured = [
                {
                    "slice": r.slice,
                    "values": {
                        "loss_delta": r.loss_delta,
                        "loss_se": r.loss_se,
                        "accuracy_delta": None if pd.isna(r.accuracy_delta) else r.accuracy_delta,
                        "kl": r.kl,
                        "flipped": r.flipped,
                    },
                }
                for r in rows.itertuples()
            ]
            found = tx.run(statement, checkpoint_id=checkpoint, intervention=intervention, measured=measured).single()
            if found is None or found["measured"] != len(measured):
                raise UserError(
                    f"Cannot save {spec!r} on {checkpoint}: the checkpoint, its channel or one of the slices "
                    f"{', '.join(rows['slice'])} is not in the catalog. Load the checkpoint first."
                )
            total += found["measured"]
        return total

    with driver.session(database=database) as session:
        return session.execute_write(save)
