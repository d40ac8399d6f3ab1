//! Usage caps of both scopes: one account capped (`scope: Account`) while the others go on,
//! and the whole product capped; bodies as X sends them.

use followq::sim::{UsageCap, UsagePeriod, UsageScope};

use crate::{Reply, Sim, roomy};

fn assert_capped(reply: &Reply, period: &str, scope: &str) {
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert!(
        reply.content_type.starts_with("application/problem+json"),
        "{}",
        reply.content_type
    );
    assert!(
        reply.problem_type().ends_with("/usage-capped"),
        "{}",
        reply.text
    );
    assert_eq!(reply.json["period"], period, "{}", reply.text);
    assert_eq!(reply.json["scope"], scope, "{}", reply.text);
}

#[tokio::test]
async fn one_account_can_be_capped_while_the_others_go_on() {
    let sim = Sim::start(roomy());
    let a = sim.handle.add_user("90");
    let b = sim.handle.add_user("91");
    sim.handle.set_account_usage_capped(
        "90",
        Some(UsageCap {
            period: UsagePeriod::Daily,
            scope: UsageScope::Account,
        }),
    );
    let capped = sim.follow(&a.access_token, "90", "5").await;
    assert_capped(&capped, "Daily", "Account");
    assert_eq!(capped.remaining, Some(999), "counted in the window");
    let other = sim.follow(&b.access_token, "91", "5").await;
    assert_eq!(other.status, 200, "{}", other.text);

    sim.handle.set_account_usage_capped("90", None);
    assert_eq!(sim.follow(&a.access_token, "90", "5").await.status, 200);

    let stats = sim.handle.stats().await;
    let (ua, ub) = (stats.user("90"), stats.user("91"));
    assert_eq!((ua.usage_capped, ua.follows), (1, 1));
    assert_eq!((ub.usage_capped, ub.follows), (0, 1));
    assert_eq!(ua.rate_limited, 0, "a usage cap is not the window");
}

#[tokio::test]
async fn the_whole_product_can_be_capped_and_wins_over_an_account_cap() {
    let sim = Sim::start(roomy());
    let a = sim.handle.add_user("92");
    let b = sim.handle.add_user("93");
    sim.handle.set_account_usage_capped(
        "92",
        Some(UsageCap {
            period: UsagePeriod::Daily,
            scope: UsageScope::Account,
        }),
    );
    sim.handle.set_usage_capped(Some(UsageCap {
        period: UsagePeriod::Monthly,
        scope: UsageScope::Product,
    }));
    assert_capped(
        &sim.follow(&a.access_token, "92", "5").await,
        "Monthly",
        "Product",
    );
    assert_capped(
        &sim.follow(&b.access_token, "93", "5").await,
        "Monthly",
        "Product",
    );

    sim.handle.set_usage_capped(None);
    assert_capped(
        &sim.follow(&a.access_token, "92", "5").await,
        "Daily",
        "Account",
    );
    assert_eq!(sim.follow(&b.access_token, "93", "5").await.status, 200);

    let stats = sim.handle.stats().await;
    assert_eq!(
        (stats.user("92").usage_capped, stats.user("93").usage_capped),
        (2, 1)
    );
}
