import pytest

from steinebm.config import Config, load_config
from steinebm.errors import ConfigError


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("method: cd\ncd_k: 10\nlr: 3e-4\nlangevin_step: 0.1\n")
    cfg = load_config(p, ["seed=3", "gamma_adaptive=0.9", "out_dir=runs/x", "log_term=m+1"])
    assert (cfg.method, cfg.cd_k, cfg.lr, cfg.langevin_step, cfg.seed) == ("cd", 10, 3e-4, 0.1, 3)
    assert cfg.gamma_adaptive == 0.9 and cfg.out_dir == "runs/x" and cfg.log_term == "m+1"
    assert isinstance(cfg.lr, float)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("alpha=1.5", "alpha"),
        ("alpha=-0.1", "alpha"),
        ("gamma=1.0", "gamma"),
        ("gamma=0.5", None),
        ("epsilon=0", "epsilon"),
        ("lr=nan", "lr"),
        ("lr=inf", "lr"),
        ("batch_size=0", "batch_size"),
        ("batch_size=1.5", "integer"),
        ("n_hidden=5000", "AIS"),
        ("bandwidth=-1", "bandwidth"),
        ("bandwidth=2.5", None),
        ("kernel=laplace", "kernel"),
        ("method=amortized-svgd", "energy_from"),
        ("device=tpu", "device"),
        ("progress=maybe", "true or false"),
        ("lrr=0.1", "did you mean 'lr'"),
    ],
)
def test_range_checks(override, needle):
    if needle is None:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError, match=needle):
        load_config(None, [override])


def test_defaults_are_the_authors():
    c = Config().validate()
    assert (c.n_hidden, c.batch_size, c.epochs, c.lr, c.beta1) == (10, 100, 20, 3e-4, 0.5)
