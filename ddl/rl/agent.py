"""The off-policy agent's methods (kind 'agent' of the registry): settings that an experiment with a
replay buffer reads from its runs' traced hyperparameters, so that one program covers a grid of them;
the learner composes nothing for them.

  replay_ratio  gradient updates per environment step (0.5: one every two steps), Ma et al. 2024;
  arr           Adaptive Replay Ratio: `replay_ratio` until the critic's fraction of active units
                settles, then `arr_high_ratio` (on when > 0; `ddl.rl.replay_ratio`);
  augment       DrQ's random shift of the replayed observations (on when > 0; `ddl.rl.augment`);
  priming       Nikishin et al. 2022's heavy priming: `priming_updates` extra updates at once when the
                warm-up ends, on its transitions only (on when > 0; `ddl.rl.replay_ratio.after_step`).
They apply where the experiment has a replay buffer (`config.replay`).
"""
from ddl.learners import method as method_lib
from ddl.learners.hyper import Hyper
from ddl.rl import augment as augment_lib
from ddl.rl import replay_ratio as ratio_lib


def _off_policy(program) -> bool:
  return program.setting('replay') is not None


def _needs_replay(where):
  if where.config.get('replay') is None:
    return (f'the {where.experiment} experiment has no replay buffer; agent settings apply to off-policy '
            'experiments (configs/minatar_replay_ratio.py)')
  return None


def _needs_images(where):
  """Random shift moves image observations; an experiment from state (its `observations(config)` is
  'state') has none."""
  problem = _needs_replay(where)
  observations = getattr(where.experiment_cls, 'observations', lambda config: 'pixels')
  if problem is None and observations(where.config) == 'state':
    problem = (f'the {where.experiment} experiment learns from state vectors, not pixels: random shift has no image '
               'to move; remove augment (or learn from pixels where the experiment can: env.pixels=True)')
  return problem


def _gated_off_policy(hyper: str):
  gated = method_lib.gated(hyper)
  return lambda program: _off_policy(program) and gated(program)


REPLAY_RATIO = method_lib.Method(
    'replay_ratio', 'agent', 'gradient updates per environment step (Ma et al. 2024)',
    (Hyper('replay_ratio', 1.0, low=0, open_low=True, doc='updates per environment step (0.5: one every two steps)'),),
    active=_off_policy, check=_needs_replay,
    examples=(('rr_2', dict(replay_ratio=2.0)),))

ARR = method_lib.Method(
    'arr', 'agent', "Adaptive Replay Ratio: a low ratio until the critic's FAU settles, then a high one (Ma et al. 2024)",
    (Hyper('arr_high_ratio', 0.0, low=0, doc='ARR: the replay ratio after the switch (0: ARR off)'),
     Hyper('check_every', 50, low=1, traced=False, doc="ARR: episodes (or steps) between checks of the critic's FAU"),
     Hyper('check_unit', 'episodes', choices=ratio_lib.CHECK_UNITS, traced=False,
           doc="ARR: what check_every counts: 'episodes' (the authors' DMC code: the window is the last episode's "
               "updates) or 'steps' (Ma et al.'s Atari interval of 2 000: the window is every update since the last check)"),
     Hyper('threshold', 0.001, low=0, traced=False, doc='ARR: switch once the mean FAU moved by at most this')),
    section='arr', active=_gated_off_policy('arr_high_ratio'), check=_needs_replay,
    examples=(('arr', dict(replay_ratio=0.5, arr_high_ratio=2.0)),))

AUGMENT = method_lib.Method(
    'augment', 'agent', "DrQ's random shift of replayed observations (Kostrikov et al. 2020)",
    (Hyper('augment', 0.0, low=0, doc='random shift of the replayed observations: on when > 0'),
     Hyper('pad', 1, low=1, traced=False, doc='random shift: pixels of replicate padding (4 on 84x84, 1 on MinAtar)'),
     Hyper('style', 'drqv2', choices=augment_lib.STYLES, traced=False,
           doc="'drqv2': shifts 0..2 pad (Kostrikov et al., DrQ-v2); 'dopamine': shifts 0..2 pad - 1 and an intensity "
               "factor, as Dopamine's DrQ(ε) on Atari")),
    section='augment', active=_gated_off_policy('augment'), check=_needs_images,
    examples=(('augment', dict(augment=1.0)),))

PRIMING = method_lib.Method(
    'priming', 'agent', "heavy priming: many updates on the warm-up's transitions at once (Nikishin et al. 2022)",
    (Hyper('priming_updates', 0.0, low=0, doc='updates made at once when the warm-up ends, beyond the ratio (0: none)'),),
    active=_gated_off_policy('priming_updates'), check=_needs_replay,
    examples=(('priming', dict(priming_updates=100.0)),))
