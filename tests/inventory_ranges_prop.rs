//! Property tests for host range expansion (`node[01:20]`, `[a:f]`, strides, several ranges).

use installer::inventory::hostrange::{Port, RangeError, expand_hostpattern, expand_range};
use proptest::prelude::*;

const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

proptest! {
    #[test]
    fn numeric_range_count_and_order(start in 0u32..5000, len in 0u32..300, step in 1u32..50) {
        let end = start + len;
        let hosts = expand_range(&format!("n[{start}:{end}:{step}]x")).unwrap();
        prop_assert_eq!(hosts.len() as u32, (end - start) / step + 1);
        for (k, h) in hosts.iter().enumerate() {
            prop_assert_eq!(h, &format!("n{}x", start + k as u32 * step));
        }
        let last: u32 = hosts.last().map(|h| h[1..h.len() - 1].parse().unwrap()).unwrap();
        prop_assert!(last <= end && end - last < step, "last {} end {} step {}", last, end, step);
    }

    #[test]
    fn reversed_numeric_range_is_empty(start in 1u32..5000, gap in 1u32..100) {
        let hosts = expand_range(&format!("n[{}:{}]", start + gap, start)).unwrap();
        prop_assert!(hosts.is_empty());
    }

    #[test]
    fn zero_padding_keeps_the_width(width in 2usize..6, a in 0u32..10, len in 0u32..200) {
        // begin starts with 0, so padding is on; end has the same width.
        let max = 10u32.pow(width as u32) - 1;
        let start = a.min(max);
        let end = (start + len).min(max);
        let hosts = expand_range(&format!("node[{start:0width$}:{end:0width$}]")).unwrap();
        prop_assert_eq!(hosts.len() as u32, end - start + 1);
        for (k, h) in hosts.iter().enumerate() {
            prop_assert_eq!(h, &format!("node{:0width$}", start + k as u32));
        }
    }

    #[test]
    fn unequal_padding_is_an_error(width in 2usize..6, extra in 1usize..3) {
        let begin = "0".repeat(width);
        let end = "9".repeat(width + extra);
        prop_assert_eq!(expand_range(&format!("h[{begin}:{end}]")), Err(RangeError::UnequalPadding));
    }

    #[test]
    fn letter_ranges_follow_ascii_letters(i in 0usize..52, len in 0usize..52, step in 1usize..5) {
        let j = (i + len).min(51);
        let (b, e) = (&LETTERS[i..=i], &LETTERS[j..=j]);
        let hosts = expand_range(&format!("h[{b}:{e}:{step}]")).unwrap();
        let want: Vec<String> = LETTERS[i..=j].chars().step_by(step).map(|c| format!("h{c}")).collect();
        prop_assert_eq!(hosts.len(), (j - i) / step + 1);
        prop_assert_eq!(hosts, want);
    }

    #[test]
    fn reversed_letter_range_is_an_error(i in 1usize..52, back in 1usize..52) {
        let j = i.saturating_sub(back);
        prop_assume!(j < i);
        let p = format!("h[{}:{}]", &LETTERS[i..=i], &LETTERS[j..=j]);
        prop_assert_eq!(expand_range(&p), Err(RangeError::LettersReversed));
    }

    #[test]
    fn several_ranges_expand_left_to_right(a in 0u32..20, n in 0u32..6, x in 0usize..20, m in 0usize..6) {
        let (b, y) = (a + n, x + m);
        let p = format!("w[{a}:{b}]-{}", format_args!("[{}:{}]", &LETTERS[x..=x], &LETTERS[y..=y]));
        let hosts = expand_range(&p).unwrap();
        let mut want = Vec::new();
        for i in a..=b {
            for c in LETTERS[x..=y].chars() {
                want.push(format!("w{i}-{c}"));
            }
        }
        prop_assert_eq!(hosts, want);
    }

    #[test]
    fn port_applies_to_every_host(start in 0u32..250, len in 0u32..5, port in 1u64..65536) {
        let end = (start + len).min(255);
        let (hosts, p) = expand_hostpattern(&format!("10.0.0.[{start}:{end}]:{port}")).unwrap();
        prop_assert_eq!(p, Some(Port::Num(port)));
        prop_assert_eq!(hosts.len() as u32, end - start + 1);
        prop_assert!(hosts.iter().all(|h| h.starts_with("10.0.0.") && !h.contains(':')));
    }

    #[test]
    fn zero_step_is_an_error(start in 0u32..100, end in 0u32..100) {
        prop_assert_eq!(expand_range(&format!("h[{start}:{end}:0]")), Err(RangeError::ZeroStep));
    }
}
