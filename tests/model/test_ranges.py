"""No figure leaves its range: on every checkpoint of the reference series (from before the induction
heads form to after) and every slice, faithfulness, the all-at-once recovery and each channel's
recovery lie in [0, 1] up to noise, or are null with the reason (ingest/behaviour.py)."""

import pandas as pd

NOISE = 0.05  # the figures' own noise on these samples (64 prompts of a slice, 13 held out)


def in_range(values: pd.Series) -> bool:
    return bool(values.dropna().between(-NOISE, 1 + NOISE).all())


def test_every_ratio_is_in_range_or_null_with_its_reason(variant_artifacts):
    from circuit_atlas.ingest.artifact import read_artifact

    reasons = set()
    for path in variant_artifacts["induction-s0"]:
        artifact = read_artifact(path)
        fidelity = artifact.manifest["fidelity"]
        assert (fidelity["loss_recovered"] is None) == (fidelity["reason"] is not None), fidelity
        assert fidelity["loss_recovered"] is None or -NOISE <= fidelity["loss_recovered"] <= 1 + NOISE, fidelity
        assert in_range(artifact.tables["blocks"]["fidelity"]), artifact.tables["blocks"]
        activity = artifact.tables["activity"]
        for entry in artifact.manifest["slices"]:
            circuit, curve = entry["circuit"], activity[activity.slice == entry["name"]]["faithfulness"]
            assert (circuit["faithfulness"] is None) == (circuit["reason"] is not None), (path.name, entry)
            if circuit["reason"] is not None and circuit["size"] == 0:
                assert curve.isna().all(), (path.name, entry["name"], curve.tolist())  # no curve without behaviour
                reasons.add(circuit["reason"].split(":")[0])
            assert in_range(curve), (path.name, entry["name"], curve.tolist())
    # Random tokens, which no model predicts better than chance, and step 1000, before the heads form:
    assert reasons == {"the clean model is no better than chance on these prompts", "little behaviour to keep"}
