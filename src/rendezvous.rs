//! Which sibling edge owns a cache key: rendezvous (highest-random-weight)
//! hashing. Every member ranks the members by a hash of (member, key) and
//! the highest wins, so all members agree without talking, and when a member
//! joins or leaves only the keys it wins or held move (about 1/N of them).

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The weight of `member` for `key`: XXH3 of the key, seeded by the member's
/// own hash, so that two members never share a sequence of weights.
fn weight(member: &str, key: &str) -> u64 {
    let seed = xxh3_64_with_seed(member.as_bytes(), 0);
    xxh3_64_with_seed(key.as_bytes(), seed)
}

/// The members in the order they own `key`: the owner first, then the one
/// that takes the key if the owner is down, and so on.
pub fn ranked<'m, M: AsRef<str>>(key: &str, members: &'m [M]) -> Vec<&'m M> {
    let mut ranked: Vec<(u64, &M)> = members.iter().map(|m| (weight(m.as_ref(), key), m)).collect();
    // Ties (never seen in practice) fall to the member's name, so every
    // member still orders them alike.
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())));
    ranked.into_iter().map(|(_, m)| m).collect()
}

/// The member that owns `key`, if there is any member.
pub fn owner<'m, M: AsRef<str>>(key: &str, members: &'m [M]) -> Option<&'m M> {
    members.iter().max_by(|a, b| {
        weight(a.as_ref(), key)
            .cmp(&weight(b.as_ref(), key))
            .then_with(|| b.as_ref().cmp(a.as_ref()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: [&str; 3] = ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"];

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://origin/live/720p/seg-{i}.ts")).collect()
    }

    #[test]
    fn the_owner_is_the_first_ranked_and_every_order_agrees() {
        for key in keys(200) {
            let ranked = ranked(&key, &FLEET);
            assert_eq!(ranked.len(), 3);
            assert_eq!(Some(ranked[0]), owner(&key, &FLEET), "{key}");
            // The members' own order does not matter.
            let reversed: Vec<&str> = FLEET.iter().rev().copied().collect();
            assert_eq!(owner(&key, &reversed), owner(&key, &FLEET), "{key}");
        }
        assert!(owner::<&str>("k", &[]).is_none());
    }

    #[test]
    fn weights_are_pinned_so_every_build_agrees() {
        // Members on different builds must pick the same owner: these values
        // change only if the hash does, which would split a mixed fleet.
        assert_eq!(
            weight("http://10.0.0.1:8080", "http://origin/a.ts"),
            18_031_498_673_273_641_629
        );
        let owners: Vec<&str> = ["http://origin/a.ts", "http://origin/b.ts", "http://origin/c.ts"]
            .iter()
            .map(|k| *owner(k, &FLEET).unwrap())
            .collect();
        assert_eq!(owners, PINNED_OWNERS);
    }

    /// Owners of a.ts, b.ts and c.ts over `FLEET`, as computed when written.
    const PINNED_OWNERS: [&str; 3] = ["http://10.0.0.1:8080", "http://10.0.0.1:8080", "http://10.0.0.3:8080"];

    #[test]
    fn keys_spread_evenly() {
        let keys = keys(3000);
        for member in FLEET {
            let owned = keys.iter().filter(|k| *owner(k, &FLEET).unwrap() == member).count();
            assert!((800..=1200).contains(&owned), "{member} owns {owned} of 3000");
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_keys_and_one_joining_takes_about_a_share() {
        let keys = keys(4000);
        let two = &FLEET[..2];
        for key in &keys {
            let before = *owner(key, &FLEET).unwrap();
            let after = *owner(key, two).unwrap();
            // Keys the leaver did not own stay where they were.
            if before != FLEET[2] {
                assert_eq!(before, after, "{key} moved");
            }
        }
        let mut four = FLEET.to_vec();
        four.push("http://10.0.0.4:8080");
        let moved = keys.iter().filter(|k| owner(k, &FLEET) != owner(k, &four)).count();
        // A quarter of the keys go to the newcomer, give or take sampling.
        assert!((800..=1200).contains(&moved), "{moved} of 4000 moved");
        for key in &keys {
            let (before, after) = (*owner(key, &FLEET).unwrap(), *owner(key, &four).unwrap());
            assert!(before == after || after == four[3], "{key} moved between old members");
        }
    }

    #[test]
    fn a_fourth_member_takes_between_15_and_35_percent_of_1000_keys() {
        let keys = keys(1000);
        let mut four = FLEET.to_vec();
        four.push("http://10.0.0.4:8080");
        let moved = keys.iter().filter(|k| owner(k, &FLEET) != owner(k, &four)).count();
        assert!((150..=350).contains(&moved), "{moved} of 1000 moved");
    }

    /// A pseudo-random number from `seed` and `i`: the same on every run.
    fn pick(seed: u64, i: u64, below: u64) -> u64 {
        xxh3_64_with_seed(&i.to_le_bytes(), seed) % below
    }

    #[test]
    fn property_any_fleet_any_key_only_the_changed_members_keys_move() {
        // 300 fleets of 1 to 12 members with made-up names, 50 keys each.
        for seed in 0..300u64 {
            let size = 1 + pick(seed, 0, 12) as usize;
            let members: Vec<String> = (0..size)
                .map(|i| format!("http://[fd00::{:x}]:{}", pick(seed, 1 + i as u64, 65_000), 8000 + i))
                .collect();
            let leaver = pick(seed, 99, size as u64) as usize;
            let without: Vec<String> = members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != leaver)
                .map(|(_, m)| m.clone())
                .collect();
            let mut shuffled = members.clone();
            shuffled.rotate_left(pick(seed, 100, size as u64) as usize);
            for k in 0..50 {
                let key = format!("http://origin/{seed}/{}", pick(seed, 200 + k, u64::MAX));
                let before = owner(&key, &members).unwrap();
                // Every member agrees, whatever order it lists the fleet in.
                assert_eq!(owner(&key, &shuffled), Some(before), "{key}");
                // The ranking is a permutation led by the owner.
                let ranked = ranked(&key, &members);
                assert_eq!(ranked.len(), size);
                assert_eq!(ranked[0], before);
                // Only the leaver's keys move, and each to the next in its ranking.
                let after = owner(&key, &without);
                if *before != members[leaver] {
                    assert_eq!(after, Some(before), "{key}");
                } else if size > 1 {
                    assert_eq!(after, Some(ranked[1]), "{key}");
                }
            }
        }
    }
}
