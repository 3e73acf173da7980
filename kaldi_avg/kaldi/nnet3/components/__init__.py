"""nnet3 components: one class per Kaldi type, byte-exact serialization, nnet3-init semantics.

`read_component` / `component_from_config` dispatch on the type name through one registry;
every class below registers itself by defining `type_name`.
"""
from .affine import AffineComponent, FixedAffineComponent, LinearComponent, NaturalGradientAffineComponent
from .attention import RestrictedAttentionComponent
from .base import Component, ComponentError, UpdatableComponent, component_from_config, component_types, read_component
from .convolution import SumBlockComponent, TimeHeightConvolutionComponent
from .frontend import PermuteComponent, SpecAugmentTimeMaskComponent
from .gru import GruNonlinearityComponent, OutputGruNonlinearityComponent
from .nonlinear import (
                     LogSoftmaxComponent,
                     NonlinearComponent,
                     RectifiedLinearComponent,
                     SigmoidComponent,
                     SoftmaxComponent,
                     TanhComponent,
)
from .normalize import BatchNormComponent, NormalizeComponent
from .recurrent import (
                     LSTM_NONLINEARITIES,
                     BackpropTruncationComponent,
                     DropoutMaskComponent,
                     LstmNonlinearityComponent,
                     default_self_repair_config,
)
from .scale import (
                     FixedBiasComponent,
                     FixedScaleComponent,
                     NaturalGradientPerElementScaleComponent,
                     PerElementScaleComponent,
                     ScaleAndOffsetComponent,
)
from .simple import (
                     ClipGradientComponent,
                     DropoutComponent,
                     ElementwiseProductComponent,
                     GeneralDropoutComponent,
                     NoOpComponent,
)
from .statistics import StatisticsExtractionComponent, StatisticsPoolingComponent
from .tdnn import TdnnComponent

__all__ = [
    "Component", "ComponentError", "UpdatableComponent", "NonlinearComponent",
    "component_from_config", "component_types", "read_component",
    "AffineComponent", "NaturalGradientAffineComponent", "FixedAffineComponent", "LinearComponent",
    "SigmoidComponent", "TanhComponent", "RectifiedLinearComponent", "SoftmaxComponent",
    "LogSoftmaxComponent", "NormalizeComponent", "BatchNormComponent",
    "LstmNonlinearityComponent", "BackpropTruncationComponent", "DropoutMaskComponent",
    "LSTM_NONLINEARITIES", "default_self_repair_config",
    "FixedScaleComponent", "FixedBiasComponent", "PerElementScaleComponent",
    "NaturalGradientPerElementScaleComponent", "ScaleAndOffsetComponent",
    "NoOpComponent", "ElementwiseProductComponent", "ClipGradientComponent", "DropoutComponent",
    "GeneralDropoutComponent", "TdnnComponent",
    "GruNonlinearityComponent", "OutputGruNonlinearityComponent",
    "SpecAugmentTimeMaskComponent", "PermuteComponent",
    "TimeHeightConvolutionComponent", "SumBlockComponent",
    "RestrictedAttentionComponent",
    "StatisticsExtractionComponent", "StatisticsPoolingComponent",
]
