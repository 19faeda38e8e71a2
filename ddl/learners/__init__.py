"""Learners: optax optimizers, reset transforms (CBP) and the learner step that composes them."""
from ddl.learners.cbp import CBPInfo, CBPState, UnitLayer, continual_backprop
from ddl.learners.learner import HPARAMS, Learner, LearnerState, StepOutput, loss_fn
from ddl.learners.optimizers import make_optimizer, perturb
