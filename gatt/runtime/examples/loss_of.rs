//! Per-sample loss of a model on masked samples, as `gatt train` computes it (token
//! mean over labels != -100), printed as JSON for scripts/train/crosscheck_loss.sh.
//!
//! cargo run -p gatt-runtime --example loss_of -- MODEL MASKED.parquet [ROWS]

use candle_core::Device;
use gatt::model::ModelSource;
use gatt_runtime::load_model;
use gatt_runtime::train::loss::{weighted_loss, LossMean, MicroBatch, StepTotals};
use gatt_runtime::train::Example;

fn main() -> gatt::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (model, data) = (
        args.get(1).cloned().unwrap_or("default".into()),
        args.get(2).cloned().unwrap_or_default(),
    );
    let rows: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);
    let source = ModelSource::resolve(&model)?;
    let m = load_model(&source, &Device::Cpu)?;
    let samples = gatt::dataset::read_samples(data.as_ref())?;
    let mut per_row = Vec::new();
    let (mut sum, mut n) = (0f64, 0usize);
    for s in samples.iter().take(rows) {
        let e = Example {
            ids: s.input_ids.clone(),
            labels: s.labels.clone(),
        };
        let k = e.n_targets();
        let totals = StepTotals::of([&e]);
        let mb = MicroBatch::new(&[&e], LossMean::Token, totals, &Device::Cpu).unwrap();
        let l = weighted_loss(&m, &mb).unwrap().to_scalar::<f32>().unwrap() as f64;
        per_row.push(l);
        sum += l * k as f64;
        n += k;
    }
    println!(
        "{}",
        serde_json::json!({"model": model, "rows": per_row.len(), "token_mean": sum / n as f64, "per_row": per_row})
    );
    Ok(())
}
