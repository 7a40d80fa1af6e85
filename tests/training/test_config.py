import pytest
import yaml

from training.config import (
    CONFIG_DIR,
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    parse_override,
)


def test_defaults_are_the_papers_hyper_parameters():
    cfg = Config()
    assert (cfg.model.width, cfg.model.hidden_size) == (64, 512)
    assert (cfg.clip.clip_len, cfg.clip.window, cfg.clip.window_step) == (10, 10, 5)
    d = cfg.distill
    assert (d.lambda_logit, d.lambda_repr, d.alpha, d.gd_size, d.gd_reg) == (10, 5, 10, 32, 10)
    s, t = cfg.source, cfg.target
    assert (s.epochs, s.lr, s.momentum, s.lr_steps, s.lr_gamma) == (200, 0.01, 0.9, [125, 175], 0.1)
    assert (t.epochs, t.lr_visual, t.lr_sequence, t.background_weight) == (400, 1e-3, 1e-3, 0.5)
    assert (t.uniform_epochs, t.activity_threshold, t.test_modality) == (200, 0.4, "depth")


def test_paper_preset_spells_out_the_defaults():
    """Every key of paper.yaml is a real key and equals the built-in default, but the size."""
    default = Config().to_dict()
    assert load_config("paper").to_dict() == {
        **default,
        "synth": {**default["synth"], "size": "224x224"},
        "prep": {**default["prep"], "size": "224x224"},
    }


def test_quick_preset_shrinks_and_says_so():
    cfg = load_config("quick")
    assert cfg.model.width <= 32 and cfg.model.hidden_size < 512
    assert cfg.prep.size == "64x64" and cfg.prep.flow == "farneback"
    paper = Config()
    assert cfg.source.epochs <= paper.source.epochs / 5
    assert cfg.target.epochs <= paper.target.epochs / 5
    comments = (CONFIG_DIR / "quick.yaml").read_text()
    for word in ("width", "64x64", "epochs", "Farneback"):
        assert word in comments


def test_overrides_are_dotted_yaml_values():
    cfg = load_config(
        "quick",
        None,
        [
            "distill.graph=uniform",
            "source.modalities=[depth]",
            "target.modalities=[depth, flow, jjd]",
            "target.mini=0.25",
            "transfer=false",
            "source.lr=1",  # an int where a float is wanted is fine
            "target.cache=/data/pku cache",
        ],
    )
    assert cfg.distill.graph == "uniform"
    assert cfg.source.modalities == ["depth"]
    assert cfg.target.modalities == ["depth", "flow", "jjd"]
    assert cfg.target.mini == 0.25 and cfg.transfer is False
    assert cfg.source.lr == 1.0 and isinstance(cfg.source.lr, float)
    assert cfg.target.cache == "/data/pku cache"
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distill.grahp=learned", "unknown config key 'distill.grahp'"),
        ("nonsense=1", "unknown config key 'nonsense'"),
        ("source.epochs=ten", "source.epochs: expected int"),
        ("source.epochs=1.5", "source.epochs: expected int"),
        ("transfer=3", "transfer: expected bool"),
        ("source.modalities=depth", "source.modalities: expected a list"),
        ("source.modalities=[depth, sonar]", "'sonar' is not one of"),
        ("distill.graph=dense", "distill.graph: 'dense' is not one of"),
        ("target.test_modality=jjd", "not an image modality"),
        ("target.modalities=[flow]", "must be among target.modalities"),
        ("target.mini=0", r"target.mini must be in \(0, 1\]"),
        ("prep.size=64by64", "size must look like"),
        ("prep.size=64", "prep.size: expected str"),
        ("model=3", "model: expected a mapping"),
        ("justakey", "is not key=value"),
        ("synth.actions=[5, 2]", "synth.actions"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, None, [override])


def test_config_files_layer_on_the_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"seed": 7, "target": {"epochs": 3}}))
    cfg = load_config("quick", path, ["seed=8"])
    assert cfg.seed == 8 and cfg.target.epochs == 3
    assert cfg.model.width == load_config("quick").model.width  # the preset still applies
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("source: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("fast")


def test_round_trip_through_a_dict():
    cfg = load_config("quick", None, ["distill.mode=student"])
    assert config_from_dict(cfg.to_dict()) == cfg
    assert yaml.safe_load(cfg.to_yaml()) == cfg.to_dict()
