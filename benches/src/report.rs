//! Tables for BENCHMARKS.md and the raw samples for raw.csv.

use std::fmt::Write as _;

/// One table: a scenario, its notes, a header row and rows of cells.
pub struct Table {
    pub title: String,
    pub notes: Vec<String>,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.to_owned(),
            notes: Vec::new(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        writeln!(s, "| {} |", self.header.join(" | ")).unwrap();
        writeln!(s, "|{}", "---|".repeat(self.header.len())).unwrap();
        for r in &self.rows {
            writeln!(s, "| {} |", r.join(" | ")).unwrap();
        }
        for n in &self.notes {
            writeln!(s, "\n{n}").unwrap();
        }
        s.push('\n');
        s
    }
}

/// Percentile (nearest rank) of samples; NaN when empty.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p95, p99 and max of unsorted samples.
pub fn summary(samples: &[f64]) -> [f64; 4] {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    [
        pct(&v, 50.0),
        pct(&v, 95.0),
        pct(&v, 99.0),
        v.last().copied().unwrap_or(f64::NAN),
    ]
}

/// A figure with a sensible number of digits.
pub fn f(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// anchor / tamizdat, as "12.3x" (how many times tamizdat is faster or smaller).
pub fn ratio(anchor: f64, tz: f64) -> String {
    if anchor.is_nan() || tz.is_nan() || tz <= 0.0 {
        "–".into()
    } else {
        format!("{}x", f(anchor / tz))
    }
}

pub fn mb(bytes: f64) -> String {
    f(bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(|i| i as f64).collect();
        let s = summary(&v);
        assert_eq!(s, [100.0, 190.0, 198.0, 200.0]);
        assert!(pct(&[], 50.0).is_nan());
        assert_eq!(ratio(10.0, 2.0), "5.00x");
        assert_eq!(ratio(10.0, 0.0), "–");
    }
}
