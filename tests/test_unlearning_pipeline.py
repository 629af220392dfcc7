"""The unlearning pipeline end to end on a tiny model, through the shared training loop."""

from trainers import loop
from trainers.methods import METHODS
from trainers.methods.unlearning.pipeline import UnlearningPipelineConfig, run_pipeline
from trainers.methods.unlearning.results import UnlearningResults
from workbench import registry


def test_registered_in_methods():
    for short in ("ga", "gd", "kl", "idk", "dpo", "npo", "npo-gd"):
        assert METHODS[f"unlearn-{short}"].name == f"unlearn-{short}"


def test_pipeline_end_to_end(tiny_folders, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    built = []
    real_build = loop.build_method

    def spy(name, args=None):  # keep each method instance to inspect its reference model afterwards
        built.append(real_build(name, args))
        return built[-1]

    monkeypatch.setattr(loop, "build_method", spy)
    config = UnlearningPipelineConfig(
        name="tiny", base_model=str(tiny_folders["gemma3"]), entities=2, forget_entities=1, methods=["npo", "idk"],
        steps=2, eval_every=1, eval_items=2, inject_epochs=1, batch_size=4, max_length=64, max_new_tokens=3,
        real_entities=["Italy"], real_forget_entities=1, verify_real=False)
    results = run_pipeline(config)

    table = results.table
    assert set(table["track"]) == {"injected", "pretrained"}
    for track in ("injected", "pretrained"):
        for method in ("npo", "idk"):
            assert sorted(table[(table.track == track) & (table.method == method)]["step"]) == [1, 2]
    injected = table[table.track == "injected"]
    assert injected["forget_quality.forget"].between(0, 1).all()
    assert injected["forget_quality.target"].between(0, 1).all()
    assert table[table.track == "pretrained"]["forget_quality.forget"].isna().all()  # no retain-only model
    assert table[table.method != "retain-only"]["model_utility"].notna().all()
    assert "Real-entity facts were not verified" in results.notes[0]

    # The reference model of NPO stayed frozen: same weights as the injected checkpoint it was loaded from.
    npo = next(m for m in built if m.name == "unlearn-npo")
    assert not npo.reference.hf_model.training
    assert all(not p.requires_grad and p.grad is None for p in npo.reference.hf_model.parameters())
    from trainers.methods.unlearning.methods import load_reference

    injected_model = load_reference(registry.latest("tiny-inject").spec)
    for (name, p), q in zip(npo.reference.hf_model.named_parameters(), injected_model.hf_model.parameters()):
        assert p.equal(q), name
    # Unlearned checkpoints are deleted once scored; the injected and retain-only models stay.
    assert registry.list_checkpoints("tiny-injected-npo") == []
    assert registry.latest("tiny-retain") is not None

    again = UnlearningResults.load("tiny")
    assert len(again.table) == len(table) and not again.comparison_frame().empty
