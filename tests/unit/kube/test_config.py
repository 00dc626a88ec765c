import pytest

from warmstart.kube.config import KubeConfigError, load_kube_config


def test_explicit_api_and_token_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("abc\n")
    cfg = load_kube_config("http://127.0.0.1:8001/", token, "ns", environ={})
    assert cfg.server == "http://127.0.0.1:8001"
    assert cfg.token() == "abc"
    token.write_text("rotated")
    assert cfg.token() == "rotated"  # read on every request
    assert cfg.namespace == "ns"


def test_in_cluster(tmp_path):
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("ca")
    (tmp_path / "namespace").write_text("warmstart")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    cfg = load_kube_config(environ=env, service_account_dir=tmp_path)
    assert cfg.server == "https://10.96.0.1:443"
    assert cfg.ca_file == tmp_path / "ca.crt"
    assert cfg.token() == "t"
    assert cfg.namespace == "warmstart"
    env6 = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert (
        load_kube_config(environ=env6, service_account_dir=tmp_path).server
        == "https://[fd00::1]:443"
    )


def test_env_api(tmp_path):
    cfg = load_kube_config(
        environ={"WARMSTART_KUBE_API": "http://127.0.0.1:1"}, service_account_dir=tmp_path
    )
    assert cfg.server == "http://127.0.0.1:1" and cfg.token() is None


@pytest.mark.parametrize("api", ["ftp://x", "127.0.0.1:6443", "http://"])
def test_bad_api(api, tmp_path):
    with pytest.raises(KubeConfigError, match="--kube-api"):
        load_kube_config(api, environ={}, service_account_dir=tmp_path)


def test_nothing_configured(tmp_path):
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST"):
        load_kube_config(environ={}, service_account_dir=tmp_path)


def test_unreadable_token(tmp_path):
    cfg = load_kube_config("http://127.0.0.1:1", tmp_path / "missing", environ={})
    with pytest.raises(KubeConfigError, match="token file"):
        cfg.token()
