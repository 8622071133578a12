//! Retention plans for a fixed history at a fixed `now`, across policies.
#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use atocore_backup_core::{BackupKind, PruneCandidate, PrunePlan, RetentionPolicy, plan_prune};
use jiff::{Span, Timestamp};
use proptest::prelude::*;
use rstest::rstest;

const NOW: &str = "2026-11-26T12:00:00Z";

/// Four months of history: hourly on the last day, daily for two weeks,
/// weekly before that, a pre-restore snapshot old and new, one broken entry.
fn history() -> Vec<PruneCandidate> {
    let now: Timestamp = NOW.parse().unwrap();
    let mut out = Vec::new();
    let mut push = |hours_ago: i64, kind: BackupKind| {
        let at = now - jiff::SignedDuration::from_hours(hours_ago);
        out.push(PruneCandidate {
            stamp: atocore_backup_core::Stamp::at(at).to_string(),
            created_at: Some(at),
            kind: Some(kind),
            problem: None,
        });
    };
    for hours in [1, 3, 5, 9, 13, 20] {
        push(hours, BackupKind::Manual);
    }
    for day in 1..=14 {
        push(day * 24 + 2, BackupKind::Manual);
    }
    for week in 3..=16 {
        push(week * 24 * 7, BackupKind::Manual);
    }
    push(30, BackupKind::PreRestore);
    push(24 * 20, BackupKind::PreRestore);
    push(24 * 2 + 5, BackupKind::Drill);
    out.push(PruneCandidate {
        stamp: "20261120T000000Z".to_owned(),
        created_at: None,
        kind: None,
        problem: Some("manifest `backup-metadata.json` cannot be parsed".to_owned()),
    });
    out
}

fn policy(edit: impl FnOnce(&mut RetentionPolicy)) -> RetentionPolicy {
    let mut policy = RetentionPolicy::default();
    edit(&mut policy);
    policy
}

/// The plan as text: one line per stamp with its fate, easy to review.
fn render(plan: &PrunePlan) -> String {
    let mut out = String::new();
    for kept in &plan.keep {
        out.push_str(&format!("keep    {}  {}\n", kept.stamp, kept.reasons.join(", ")));
    }
    for removed in &plan.remove {
        out.push_str(&format!("remove  {}  {}\n", removed.stamp, removed.kind.as_str()));
    }
    for pre in &plan.pre_restore {
        out.push_str(&format!(
            "pre-restore {} {}  {}\n",
            if pre.keep { "keep  " } else { "remove" },
            pre.stamp,
            pre.reason
        ));
    }
    for bad in &plan.not_counted {
        out.push_str(&format!("not counted {}  {}\n", bad.stamp, bad.problem));
    }
    out
}

#[rstest]
#[case::last_3(policy(|p| p.keep_last = Some(3)))]
#[case::hourly_4(policy(|p| p.keep_hourly = Some(4)))]
#[case::daily_7(policy(|p| p.keep_daily = Some(7)))]
#[case::weekly_4(policy(|p| p.keep_weekly = Some(4)))]
#[case::monthly_6(policy(|p| p.keep_monthly = Some(6)))]
#[case::yearly_2(policy(|p| p.keep_yearly = Some(2)))]
#[case::within_3_days(policy(|p| p.keep_within = Some(Span::new().days(3))))]
#[case::cron_7d_4w_6m(policy(|p| { p.keep_daily = Some(7); p.keep_weekly = Some(4); p.keep_monthly = Some(6); }))]
#[case::last_1_pre_restore_within_1_day(policy(|p| { p.keep_last = Some(1); p.keep_pre_restore_within = Span::new().days(1); }))]
fn plans(#[case] policy: RetentionPolicy) {
    let plan = plan_prune(&history(), &policy, NOW.parse().unwrap()).unwrap();
    let name = std::thread::current()
        .name()
        .unwrap_or("plan")
        .rsplit("::")
        .next()
        .unwrap()
        .to_owned();
    insta::assert_snapshot!(name, render(&plan));
}

#[test]
fn an_empty_policy_is_refused() {
    let error = plan_prune(&history(), &RetentionPolicy::default(), NOW.parse().unwrap()).unwrap_err();
    insta::assert_snapshot!(error.to_string(), @"no retention policy given: pass at least one --keep-* option; nothing was deleted");
}

#[test]
fn the_plan_serializes_for_json_output() {
    let plan = plan_prune(
        &history()[..3],
        &policy(|p| p.keep_last = Some(1)),
        NOW.parse().unwrap(),
    )
    .unwrap();
    insta::assert_json_snapshot!(plan);
}

fn arbitrary_history() -> impl Strategy<Value = Vec<PruneCandidate>> {
    let entry = (0i64..24 * 400, 0u8..10, any::<bool>()).prop_map(|(hours_ago, kind, broken)| {
        let at: Timestamp = NOW.parse::<Timestamp>().unwrap() - jiff::SignedDuration::from_hours(hours_ago);
        let kind = match kind {
            0 => BackupKind::PreRestore,
            1 => BackupKind::Drill,
            _ => BackupKind::Manual,
        };
        PruneCandidate {
            stamp: atocore_backup_core::Stamp::at(at).to_string(),
            created_at: Some(at),
            kind: Some(kind),
            problem: broken.then(|| "broken".to_owned()),
        }
    });
    proptest::collection::vec(entry, 0..40).prop_map(|mut entries| {
        entries.sort_by(|a, b| a.stamp.cmp(&b.stamp));
        entries.dedup_by(|a, b| a.stamp == b.stamp);
        entries
    })
}

fn arbitrary_policy() -> impl Strategy<Value = RetentionPolicy> {
    let count = proptest::option::of(0u32..6);
    (
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count,
        proptest::option::of(0i64..60),
        0i64..30,
    )
        .prop_map(
            |(last, hourly, daily, weekly, monthly, yearly, within, pre)| RetentionPolicy {
                keep_last: last,
                keep_hourly: hourly,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                keep_yearly: yearly,
                keep_within: within.map(|d| Span::new().days(d)),
                keep_pre_restore_within: Span::new().days(pre),
            },
        )
}

proptest! {
    #[test]
    fn the_newest_valid_backup_is_never_removed_and_no_stamp_is_both_kept_and_removed(
        history in arbitrary_history(),
        policy in arbitrary_policy(),
    ) {
        let Ok(plan) = plan_prune(&history, &policy, NOW.parse().unwrap()) else {
            prop_assert!(policy.is_empty());
            return Ok(());
        };
        let removed: Vec<&str> = plan.remove.iter().map(|r| r.stamp.as_str()).collect();
        let newest_valid = history
            .iter()
            .filter(|c| c.problem.is_none())
            .max_by_key(|c| (c.created_at, c.stamp.parse::<atocore_backup_core::Stamp>().ok()));
        if let Some(newest) = newest_valid {
            prop_assert!(!removed.contains(&newest.stamp.as_str()), "newest valid {} removed", newest.stamp);
        }
        for kept in &plan.keep {
            prop_assert!(!removed.contains(&kept.stamp.as_str()));
            prop_assert!(!kept.reasons.is_empty());
        }
        for pre in plan.pre_restore.iter().filter(|p| p.keep) {
            prop_assert!(!removed.contains(&pre.stamp.as_str()));
        }
        for broken in history.iter().filter(|c| c.problem.is_some()) {
            prop_assert!(!removed.contains(&broken.stamp.as_str()), "prune never deletes a broken backup");
        }
        // Every valid backup is accounted for exactly once.
        let valid = history.iter().filter(|c| c.problem.is_none()).count();
        let pre_kept = plan.pre_restore.iter().filter(|p| p.keep).count();
        prop_assert_eq!(plan.keep.len() + pre_kept + plan.remove.len(), valid);
    }
}
