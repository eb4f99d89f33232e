import pytest

from clift.errors import RegistryError
from clift.registry import Registry


def test_register_and_get():
    reg: Registry[int] = Registry("thing")
    reg.register("alpha", 1)
    assert reg.get("alpha") == 1
    assert "alpha" in reg and reg.names() == ["alpha"]


@pytest.mark.parametrize("bad", ["Alpha", "1x", "", "a b"])
def test_rejects_bad_names(bad):
    with pytest.raises(ValueError, match="invalid"):
        Registry("thing").register(bad, 1)


def test_rejects_duplicates():
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)


def test_unknown_name_suggests_near_match_and_lists_all():
    reg: Registry[int] = Registry("method")
    for n in ("seq_lora", "seq_ft", "per_task"):
        reg.register(n, 0)
    with pytest.raises(RegistryError) as err:
        reg.get("seq_lroa")
    msg = str(err.value)
    assert "unknown method 'seq_lroa'" in msg and "Did you mean 'seq_lora'" in msg
    assert "Available: per_task, seq_ft, seq_lora." in msg
