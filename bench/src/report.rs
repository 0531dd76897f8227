//! Collects samples and prints the table / JSON.

use std::collections::BTreeMap;

use serde::Serialize;

/// One number a workload produced on one target in one run.
#[derive(Clone, Debug)]
pub struct Measure {
    pub workload: String,
    /// "rate", "bandwidth", "iops", "peak_rss".
    pub metric: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub value: f64,
}

impl Measure {
    pub fn new(workload: impl Into<String>, metric: &'static str, unit: &'static str, value: f64) -> Self {
        Measure { workload: workload.into(), metric, unit, higher_is_better: true, value }
    }
    pub fn lower_better(mut self) -> Self {
        self.higher_is_better = false;
        self
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        Some(Stats { median, min: s[0], max: s[n - 1], samples: samples.to_vec() })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub metric: String,
    pub unit: String,
    pub higher_is_better: bool,
    /// target name → statistics over runs.
    pub targets: BTreeMap<String, Stats>,
    /// target name → median(target) / median(native); absent where either
    /// is missing.
    pub ratios: BTreeMap<String, f64>,
}

/// (workload, metric, unit, higher_is_better, target → samples).
type RawRow = (String, &'static str, &'static str, bool, BTreeMap<String, Vec<f64>>);

#[derive(Default)]
pub struct Results {
    /// In first-seen order.
    rows: Vec<RawRow>,
}

impl Results {
    pub fn add(&mut self, target: &str, m: &Measure) {
        let idx = match self.rows.iter().position(|r| r.0 == m.workload && r.2 == m.unit) {
            Some(i) => i,
            None => {
                self.rows.push((m.workload.clone(), m.metric, m.unit, m.higher_is_better, BTreeMap::new()));
                self.rows.len() - 1
            }
        };
        self.rows[idx].4.entry(target.to_string()).or_default().push(m.value);
    }

    pub fn rows(&self, order: &[&str]) -> Vec<Row> {
        // Stable presentation order: by workload family, then first seen.
        let rank = |w: &str| order.iter().position(|o| w.starts_with(o)).unwrap_or(order.len());
        let mut rows: Vec<Row> = self
            .rows
            .iter()
            .map(|(w, metric, unit, hib, samples)| {
                let targets: BTreeMap<String, Stats> =
                    samples.iter().filter_map(|(t, s)| Stats::of(s).map(|st| (t.clone(), st))).collect();
                let mut ratios = BTreeMap::new();
                if let Some(n) = targets.get("native") {
                    for (t, st) in &targets {
                        if t != "native" && n.median > 0.0 {
                            ratios.insert(t.clone(), st.median / n.median);
                        }
                    }
                }
                Row {
                    workload: w.clone(),
                    metric: metric.to_string(),
                    unit: unit.to_string(),
                    higher_is_better: *hib,
                    targets,
                    ratios,
                }
            })
            .collect();
        rows.sort_by_key(|r| rank(&r.workload));
        rows
    }
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 100.0 {
        format!("{:.0}", v)
    } else if a >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    };
    // Thousands separators for the integer part.
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), format!(".{f}")),
        None => (s.clone(), String::new()),
    };
    let neg = int.starts_with('-');
    let digits: Vec<char> = int.trim_start_matches('-').chars().collect();
    let mut out = String::new();
    for (i, c) in digits.iter().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(*c);
    }
    format!("{}{}{}", if neg { "-" } else { "" }, out, frac)
}

fn cell(st: Option<&Stats>) -> (String, String) {
    match st {
        Some(s) if s.samples.len() > 1 => (fmt_num(s.median), format!("{}–{}", fmt_num(s.min), fmt_num(s.max))),
        Some(s) => (fmt_num(s.median), String::new()),
        None => ("n/a".into(), String::new()),
    }
}

/// A plain-text table: workload | metric | per target median [min–max] | ratio.
pub fn table(rows: &[Row], targets: &[String]) -> String {
    let mut header = vec!["workload".to_string(), "metric".to_string()];
    for t in targets {
        header.push(t.clone());
        header.push(format!("{t} min–max"));
        if t != "native" {
            header.push(format!("{t}/native"));
        }
    }
    let mut lines: Vec<Vec<String>> = vec![header];
    for r in rows {
        let mut l = vec![r.workload.clone(), r.unit.clone()];
        for t in targets {
            let (m, range) = cell(r.targets.get(t));
            l.push(m);
            l.push(range);
            if t != "native" {
                l.push(r.ratios.get(t).map(|x| format!("{x:.2}")).unwrap_or_else(|| "n/a".into()));
            }
        }
        lines.push(l);
    }
    let ncol = lines[0].len();
    let width: Vec<usize> =
        (0..ncol).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let pad = width[c] - s.chars().count();
                if c < 2 {
                    format!("{s}{}", " ".repeat(pad))
                } else {
                    format!("{}{s}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
        if i == 0 {
            let sep: Vec<String> = width
                .iter()
                .enumerate()
                .map(|(c, w)| if c < 2 { "-".repeat(*w) } else { format!("{}:", "-".repeat(w.saturating_sub(1))) })
                .collect();
            out.push_str(&format!("| {} |\n", sep.join(" | ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_format() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stats::of(&[1.0, 2.0]).unwrap().median, 1.5);
        assert_eq!(fmt_num(1234567.4), "1,234,567");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(0.5), "0.50");
    }

    #[test]
    fn ratios_against_native() {
        let mut r = Results::default();
        r.add("native", &Measure::new("stat-warm", "rate", "ops/s", 100.0));
        r.add("spoolfs", &Measure::new("stat-warm", "rate", "ops/s", 90.0));
        let rows = r.rows(&["stat"]);
        assert!((rows[0].ratios["spoolfs"] - 0.9).abs() < 1e-9);
    }
}
