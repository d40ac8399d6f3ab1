//! Leases over accounts that Citus spreads over several shards: every lease statement names
//! one shard's accounts there (`store::shards`), and together they answer for all of them. On
//! one Postgres the same calls are one statement each; `.ci/run` runs this file on both.

use std::time::Duration;

use followq::queue::{FollowRequest, enqueue};
use followq::store::leases::{self, Release};
use followq::store::shards::Shards;

use crate::helpers::TestDb;

const LEASE: Duration = Duration::from_secs(60);

fn sorted(mut accounts: Vec<String>) -> Vec<String> {
    accounts.sort();
    accounts
}

#[tokio::test]
async fn every_lease_statement_answers_for_accounts_of_every_shard() {
    let db = TestDb::new().await;
    let accounts: Vec<String> = (0..12).map(|n| (300_001 + n).to_string()).collect();
    for account in &accounts {
        db.add_account(account).await;
        let request = FollowRequest::new(account, "900001").expect("ids");
        enqueue(&db.pool, &request).await.expect("enqueue");
    }
    let shards = Shards::new();
    let groups = shards.group(&db.pool, &accounts).await.expect("shards");
    if shards.distributed(&db.pool).await.expect("citus?") {
        assert!(
            groups.len() > 1,
            "the accounts should span shards: {groups:?}"
        );
    } else {
        assert_eq!(groups, vec![accounts.clone()]);
    }

    // Any free account: all twelve, to one daemon only.
    let leased = leases::acquire(&db.pool, &shards, "daemon-a", LEASE, 100)
        .await
        .expect("acquire");
    let leased = sorted(leased.into_iter().map(|a| a.user_id).collect());
    assert_eq!(leased, accounts);
    let none = leases::acquire(&db.pool, &shards, "daemon-b", LEASE, 100)
        .await
        .expect("acquire");
    assert!(none.is_empty(), "{none:?}");

    let kept = leases::renew(&db.pool, &shards, "daemon-a", &accounts, LEASE)
        .await
        .expect("renew");
    assert_eq!(sorted(kept), accounts);

    // Half given back, and leased by name to the other daemon.
    let (given, kept) = accounts.split_at(6);
    let released = leases::release(&db.pool, &shards, "daemon-a", given, Release::Now)
        .await
        .expect("release");
    assert_eq!(sorted(released), given.to_vec());
    let taken = leases::acquire_named(&db.pool, &shards, "daemon-b", &accounts, LEASE)
        .await
        .expect("acquire named");
    let taken = sorted(taken.into_iter().map(|a| a.user_id).collect());
    assert_eq!(taken, given.to_vec());
    let still_held = leases::renew(&db.pool, &shards, "daemon-a", &accounts, LEASE)
        .await
        .expect("renew");
    assert_eq!(sorted(still_held), kept.to_vec());

    assert_eq!(
        leases::release_all(&db.pool, &shards, "daemon-a")
            .await
            .expect("release all"),
        6
    );
    assert_eq!(
        leases::release_all(&db.pool, &shards, "daemon-b")
            .await
            .expect("release all"),
        6
    );
}
