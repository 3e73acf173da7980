"""The torch-op registry (kaldi_avg/model/op_registry.py) against the Kaldi component registry:
every Kaldi component type runs, or is declared not runnable; a type without an op fails when
its op is built, in one line."""
import pytest

from kaldi_avg.kaldi.nnet3.components import GeneralDropoutComponent, NoOpComponent, component_types
from kaldi_avg.kaldi.nnet3.config import NetworkConfigError
from kaldi_avg.model import op_registry
from kaldi_avg.model.op_registry import NOT_RUNNABLE, missing_ops, register_op, supported_types
from kaldi_avg.model.ops import ComponentOp

from ..kaldi.test_components import samples


def test_every_kaldi_component_type_has_an_op_or_is_declared_not_runnable():
    assert missing_ops(component_types()) == []
    assert supported_types() <= set(component_types())   # no op for a type Kaldi's side lacks
    assert not supported_types() & NOT_RUNNABLE


def test_a_component_type_without_an_op_is_reported_and_fails_when_built(monkeypatch):
    monkeypatch.delitem(op_registry._OPS, "NoOpComponent")
    assert missing_ops(component_types()) == ["NoOpComponent"]
    with pytest.raises(NetworkConfigError, match=r"^component type NoOpComponent has no PyTorch implementation in "
                                          r"kaldi-avg \(supported: AffineComponent, .*, TanhComponent, "):
        ComponentOp(NoOpComponent(dim=2))


def test_a_type_registers_one_op():
    with pytest.raises(TypeError, match="NoOpComponent registered twice"):
        register_op(NoOpComponent)(lambda op, x, frames: x)


@pytest.mark.parametrize("comp", samples(), ids=lambda c: c.type_name)
def test_declared_tensors_agree_with_the_component(comp):
    """The trainable arrays are the op's parameters, and natural gradient only replaces theirs."""
    op = ComponentOp(comp)
    assert {name for name, _ in op.named_parameters()} == set(comp.params())
    if op.has_natural_gradient:
        assert {n for n in op.spec.natural_gradient.params if n in comp.params()}


def test_checks_refuse_what_kaldi_avg_cannot_run():
    comp = GeneralDropoutComponent(dim=4, time_period=2, spec_augment_max_proportion=0.5)
    with pytest.raises(NetworkConfigError, match="^GeneralDropoutComponent with specaugment-max-proportion and time-period "
                                          "has no PyTorch implementation in kaldi-avg$"):
        ComponentOp(comp)

