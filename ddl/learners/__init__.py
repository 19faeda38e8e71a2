"""Learners: the methods (one module each, `ddl.learners.registry`) and the learner step that composes them."""
from ddl.learners.cbp import CBPInfo, CBPState, UnitLayer, continual_backprop
from ddl.learners.learner import Learner, LearnerState, StepOutput, loss_fn
from ddl.learners.optimizers import build_chain, perturb
