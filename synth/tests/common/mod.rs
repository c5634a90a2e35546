//! What the pipeline tests share: the options of a small synthesis run, and counting
//! the gate's rejections.

use gatt::backend::SamplingParams;
use gatt::transform::{Attach, Placement};
use gatt::ConstraintKind;
use gatt_synth::plan::Shard;
use gatt_synth::SynthOptions;

/// Ten dialogues of three turns, two candidates, chunks of three, `shard` of the job.
pub fn opts(shard: Shard) -> SynthOptions {
    SynthOptions {
        dialogues: 10,
        turns: 3,
        seed: 42,
        kinds: vec![
            ConstraintKind::Language,
            ConstraintKind::Figure,
            ConstraintKind::Hobby,
        ],
        min_combined: 1,
        max_combined: 2,
        terse: 0.5,
        attach: Attach::Prefix,
        placement: Placement::System,
        candidates: 2,
        sampling: SamplingParams::default(),
        concise: 0.0,
        probe_rate: 0.0,
        plain_share: 0.0,
        user_sim: false,
        shard,
        chunk: 3,
        gate: gatt_synth::GateOptions::default(),
        open_dialogues: 0,
    }
}

/// How many times `r` was counted in one of the gate's tallies (0 when never).
#[allow(dead_code)] // not every test binary counts rejections
pub fn count(
    m: &std::collections::BTreeMap<gatt_synth::Rejection, usize>,
    r: gatt_synth::Rejection,
) -> usize {
    m.get(&r).copied().unwrap_or(0)
}
