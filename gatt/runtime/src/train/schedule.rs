//! Learning rate: linear warm-up, then a cosine decay to `min_ratio` of the peak.

/// The learning rate of every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    /// Highest learning rate, reached at the last warm-up step.
    pub peak: f64,
    /// Warm-up steps: step `i < warmup` gets `peak · (i + 1) / warmup`.
    pub warmup: usize,
    /// Steps of the whole run: the cosine reaches its floor at step `total` (0-based).
    pub total: usize,
    /// The floor, as a fraction of `peak`.
    pub min_ratio: f64,
}

impl Schedule {
    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let min = self.peak * self.min_ratio;
        min + 0.5 * (self.peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        let s = Schedule {
            peak: 1.0,
            warmup: 4,
            total: 14,
            min_ratio: 0.1,
        };
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(3), 1.0);
        assert!((s.lr(4) - 1.0).abs() < 1e-12);
        assert!((s.lr(9) - 0.55).abs() < 1e-12);
        assert!((s.lr(14) - 0.1).abs() < 1e-12);
        assert!((1..14).all(|i| s.lr(i + 4) <= s.lr(i + 3) + 1e-12));
    }
}
