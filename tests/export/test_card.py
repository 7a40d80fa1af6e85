from export.card import main
from tests.server.tiny_bundle import make_bundle


def test_card_lists_classes_metrics_and_the_command(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    assert main([str(bundle.root), "--command", "make default-model"]) == 0
    card = (bundle.root / "README.md").read_text()
    assert "make default-model" in card
    assert all(name in card for name in bundle.classes)
    assert f"{bundle.clip.height}x{bundle.clip.width}" in card
    assert main([str(tmp_path / "nothing")]) == 2
    assert "not a model bundle" in capsys.readouterr().err
