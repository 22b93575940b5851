"""Labelled scenarios: simulated GPU fleets with injected faults, and the scorer of the detectors.

- `scenarios.fleet`: a fleet of N nodes × G GPUs running realistic workloads (distributed
  training, bursty inference, fine-tuning, MIG slices, idle gaps, noisy sensors), emitted as
  Batch v1 documents at 1 Hz in 30 s batches, deterministic per seed.
- `scenarios.faults`: one injector per rule of the detector catalogue; each changes the fleet's
  data and states its ground truth (rule, subject, start, end).
- `scenarios.suite`: the named scenarios (healthy ones, and one or more per rule).
- `scenarios.run`: replays a scenario through the real path (codec, window, detectors, alert
  state machine) and scores each rule: recall, precision, detection delay, false alarms.

`python -m scenarios [--quick] [--only NAME] [--out FILE]`; docs/scenarios.md has the details.
"""
