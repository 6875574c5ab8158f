//! Arweave checkpoint records: parsing, finding through a gateway, choosing, validating and
//! downloading with the SHA-256 check.

use super::*;
use crate::gateway::local::LocalGateway;
use crate::su::types::Tag;
use std::io::Write as _;

const PID: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const MODULE: &str = "BAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const CU: &str = "cu-wallet-address-aaaaaaaaaaaaaaaaaaaaaaaaaa";

fn memory(fill: u8) -> Vec<u8> {
    let mut m = vec![0u8; 2 * WASM_PAGE];
    m[100] = fill;
    m[70_000] = fill.wrapping_add(1);
    m
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn tags(nonce: u64, timestamp: i64, sha: &[u8], extra: &[(&str, &str)]) -> Vec<Tag> {
    let mut t: Vec<Tag> = [
        ("Data-Protocol", "ao"),
        ("Variant", "ao.TN.1"),
        ("Type", "Checkpoint"),
        ("Module", MODULE),
        ("Process", PID),
        ("Nonce", &nonce.to_string()),
        ("Timestamp", &timestamp.to_string()),
        ("Block-Height", "1500000"),
        ("Content-Type", "application/octet-stream"),
        ("SHA-256", &hex::encode(sha)),
        ("Content-Encoding", "gzip"),
        ("Unit-Identifier", "6c9c4f0a-0000-4000-8000-000000000000"),
        ("Ordinate", &nonce.to_string()),
    ]
    .iter()
    .map(|(n, v)| Tag { name: n.to_string(), value: v.to_string() })
    .collect();
    for (n, v) in extra {
        t.retain(|x| x.name != *n);
        t.push(Tag { name: n.to_string(), value: v.to_string() });
    }
    t
}

/// Registers a gzip checkpoint of `mem` at `nonce` signed by `owner`; returns its id.
fn publish(g: &LocalGateway, owner: &str, nonce: u64, mem: &[u8], extra: &[(&str, &str)]) -> String {
    let sha: [u8; 32] = sha2::Sha256::digest(mem).into();
    g.register(owner, tags(nonce, 1_700_000_000_000 + nonce as i64, &sha, extra), gzip(mem)).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn records_parse_with_the_reference_tags_and_bad_ones_name_the_tag() {
    let g = LocalGateway::default();
    let id = publish(
        &g,
        CU,
        7,
        &memory(1),
        &[("Cron-Interval", "0-10-minutes"), ("Hash-Chain", "hc"), ("Assignment", "as")],
    );
    let tx = rt().block_on(g.transaction(&id)).unwrap();
    let cp = parse_record(&tx).unwrap();
    assert_eq!(cp.position, Position { timestamp: 1_700_000_000_007, nonce: 7, cron: Some("0-10-minutes".into()) });
    assert_eq!((cp.block_height, cp.encoding), (1_500_000, Encoding::Gzip));
    assert_eq!((cp.assignment.as_deref(), cp.hash_chain.as_deref()), (Some("as"), Some("hc")));
    assert_eq!(cp.owner, CU);

    for (tag, value, why) in [
        ("Nonce", "x", "Nonce is not a non-negative integer"),
        ("SHA-256", "zz", "SHA-256 is not hex"),
        ("Content-Encoding", "br", "only gzip"),
        ("Type", "Message", "Type is not Checkpoint"),
        ("Module", "", "no Module tag"),
    ] {
        let mut bad = tx.clone();
        bad.tags.iter_mut().filter(|t| t.name == tag).for_each(|t| t.value = value.into());
        let err = parse_record(&bad).unwrap_err().to_string();
        assert!(err.contains(why) && err.contains(&tx.id), "{tag}: {err}");
    }
}

#[test]
fn find_uses_trusted_owners_prefers_preferred_and_skips_ignored_and_foreign_records() {
    let g = LocalGateway::default();
    let mine = publish(&g, CU, 3, &memory(3), &[]);
    let newer = publish(&g, CU, 5, &memory(5), &[]);
    let stranger = publish(&g, "someone-else", 9, &memory(9), &[]);
    let other_module = publish(&g, CU, 11, &memory(11), &[("Module", "another-module")]);
    let broken = publish(&g, CU, 12, &memory(12), &[("SHA-256", "nothex")]);
    let s = ArweaveSettings::default();
    let ids = |v: Vec<ArweaveCheckpoint>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let rt = rt();
    // The CU's own records by default, newest first; foreign module and broken ones skipped.
    let found = rt.block_on(find(&g, PID, MODULE, CU, &s)).unwrap();
    assert_eq!(ids(found), vec![newer.clone(), mine.clone()]);
    assert!(![stranger.clone(), other_module, broken].is_empty());
    // Trusted owners replace the CU's address.
    let s2 = ArweaveSettings { trusted_owners: vec!["someone-else".into()], ..s.clone() };
    assert_eq!(ids(rt.block_on(find(&g, PID, MODULE, CU, &s2)).unwrap()), vec![stranger.clone()]);
    // Preferred owners win when they have records.
    let s3 = ArweaveSettings { preferred_owners: vec!["someone-else".into()], ..s.clone() };
    assert_eq!(ids(rt.block_on(find(&g, PID, MODULE, CU, &s3)).unwrap()), vec![stranger]);
    let s4 = ArweaveSettings { preferred_owners: vec!["nobody".into()], ..s.clone() };
    assert_eq!(ids(rt.block_on(find(&g, PID, MODULE, CU, &s4)).unwrap()), vec![newer.clone(), mine.clone()]);
    // Ignored ids and ignored processes.
    let s5 = ArweaveSettings { ignore_ids: vec![newer], ..s.clone() };
    assert_eq!(ids(rt.block_on(find(&g, PID, MODULE, CU, &s5)).unwrap()), vec![mine]);
    let s6 = ArweaveSettings { ignore_processes: vec![PID.into()], ..s };
    assert!(rt.block_on(find(&g, PID, MODULE, CU, &s6)).unwrap().is_empty());
}

#[test]
fn download_gunzips_checks_the_hash_and_the_bound() {
    let g = LocalGateway::default();
    let mem = memory(42);
    let id = publish(&g, CU, 1, &mem, &[]);
    let rt = rt();
    let cp = parse_record(&rt.block_on(g.transaction(&id)).unwrap()).unwrap();
    assert_eq!(rt.block_on(download(&g, &cp, 1 << 20)).unwrap(), mem);
    // Over the bound once uncompressed: refused without inflating past it.
    let err = rt.block_on(download(&g, &cp, WASM_PAGE as u64)).unwrap_err().to_string();
    assert!(err.contains("over the limit"), "{err}");
    // Data that does not match the record's SHA-256.
    let mut lying = cp.clone();
    lying.sha256[0] ^= 1;
    let err = rt.block_on(download(&g, &lying, 1 << 20)).unwrap_err().to_string();
    assert!(err.contains("SHA-256 of the memory"), "{err}");
    // Not gzip at all, and not whole pages.
    assert!(decode(&cp, b"not gzip", 1 << 20).unwrap_err().to_string().contains("gunzip"));
    let odd = vec![0u8; 1000];
    let sha: [u8; 32] = sha2::Sha256::digest(&odd).into();
    let plain = ArweaveCheckpoint { encoding: Encoding::Identity, sha256: sha, ..cp };
    assert!(decode(&plain, &odd, 1 << 20).unwrap_err().to_string().contains("wasm pages"));
}

fn cand(nonce: u64) -> ArweaveCheckpoint {
    ArweaveCheckpoint {
        id: format!("cp{nonce}"),
        owner: CU.into(),
        module_id: MODULE.into(),
        process_id: PID.into(),
        position: Position { timestamp: nonce as i64, nonce, cron: None },
        block_height: 1,
        sha256: [0; 32],
        encoding: Encoding::Gzip,
        assignment: None,
        hash_chain: None,
    }
}

#[test]
fn few_candidates_use_the_newest_many_are_validated_by_windows() {
    let s = ArweaveSettings::default();
    assert_eq!(choose(vec![], &s), Choice::None);
    let few: Vec<_> = [4, 9, 2].into_iter().map(cand).collect();
    assert_eq!(choose(few, &s), Choice::Use(Box::new(cand(9))));
    let many: Vec<_> = (0..20).rev().map(cand).collect();
    let Choice::Validate(sorted) = choose(many, &s) else { panic!("20 > 15 candidates are validated") };
    assert_eq!(sorted.iter().map(|c| c.position.nonce).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());

    let rt = rt();
    // Every replay matches: the first window (ending at the newest) is accepted.
    assert_eq!(rt.block_on(validate(&sorted, &s, |_, _| async { Ok(true) })), Some(cand(19)));
    // The two newest checkpoints are bad: pairs touching them mismatch.
    let bad = |a: &ArweaveCheckpoint, b: &ArweaveCheckpoint| {
        [18, 19].contains(&a.position.nonce) || [18, 19].contains(&b.position.nonce)
    };
    let got = rt.block_on(validate(&sorted, &s, |a, b| {
        let ok = !bad(&a, &b);
        async move { Ok(ok) }
    }));
    // Window ending at 19: 7/10 < 0.75. Ending at 18: 8/10 ≥ 0.75, which the reference would
    // accept, but 18's own replay failed. Ending at 17: 9/10 and its own pair matched: accepted.
    assert_eq!(got, Some(cand(17)));
    // Replays that fail or never match: nothing accepted.
    assert_eq!(rt.block_on(validate(&sorted, &s, |_, _| async { Err("boom".to_string()) })), None);
}
