//! How results are printed: numbers to three significant digits and markdown tables, shared by
//! the reproductions' reports and the plots' axis labels.

/// A markdown table from a header and rows of cells.
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "| {} |\n|{}|\n",
        header.join(" | "),
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}

/// A number in 3 significant digits, the tables' format.
pub fn fmt3(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        // Zero has no leading digit to count from (log10 is -inf).
        return "0".into();
    }
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e4) {
        format!("{v:.2e}")
    } else {
        let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::fmt3;

    #[test]
    fn three_significant_digits() {
        let cases = [
            (0.0, "0"),
            (1.0, "1.00"),
            (0.0125, "0.0125"),
            (1e-4, "1.00e-4"),
        ];
        for (v, s) in cases {
            assert_eq!(fmt3(v), s);
        }
        assert_eq!(fmt3(-2.5), "-2.50");
        assert_eq!(fmt3(123456.0), "1.23e5");
    }
}
