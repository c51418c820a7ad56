//! Every identifier `ors` makes, in one place: session ids that name their
//! worker, request tokens, GMS service ids, CometD client ids, the ids of
//! simulated backend objects, and the engine's own session, send and
//! invoke ids.
//!
//! Random ids take their bits from the operating system's random source
//! (through the `getrandom` crate: the `getrandom(2)` system call on Linux),
//! so they cannot be guessed from earlier ids, the time or the process.
//! Send and invoke ids are not random: the engine numbers them per session
//! so that a restored snapshot goes on exactly as the original would have.
//!
//! This is the bottom layer of the crate: it imports no other module of
//! it. The shapes below are external formats (clients, W3C tests and stored
//! sessions see them); change none of them.

/// Characters in a server session id: 24 random hex digits, then two for
/// the worker.
pub const SESSION_ID_LEN: usize = 26;

/// `N` bytes from the operating system's random source.
///
/// # Panics
/// If the operating system cannot give random bytes at all (on Linux only
/// when the `getrandom` system call and `/dev/urandom` are both missing).
/// Going on with guessable ids would be worse; standard library hash maps
/// need the same source and fail the same way.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random source failed: {e}");
    }
    bytes
}

/// A random `u64` from the operating system's random source.
fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes())
}

/// `bytes` as hex digits, two per byte, in upper or lower case.
fn hex(bytes: &[u8], upper: bool) -> String {
    const LOWER: &[u8; 16] = b"0123456789abcdef";
    const UPPER: &[u8; 16] = b"0123456789ABCDEF";
    let digits = if upper { UPPER } else { LOWER };
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(digits[usize::from(b >> 4)]));
        out.push(char::from(digits[usize::from(b & 0x0f)]));
    }
    out
}

/// A new id for a server session pinned to `worker`: 96 random bits as 24
/// uppercase hex digits, then `worker` modulo 256 as two uppercase hex
/// digits ([`SESSION_ID_LEN`] characters in all, e.g.
/// `9F0C1A2B3C4D5E6F708192A301`). [`worker_of`] reads the worker back.
pub fn session_id(worker: usize) -> String {
    let mut id = hex(&random_bytes::<12>(), true);
    id.push_str(&hex(&[(worker & 0xff) as u8], true));
    id
}

/// The worker a server session id names, if the id has the shape
/// [`session_id`] makes (26 hex digits, either case). Ids made when the
/// server had more workers (sessions recovered from the store) wrap around
/// modulo `workers`; `None` when `workers` is 0.
pub fn worker_of(id: &str, workers: usize) -> Option<usize> {
    if id.len() != SESSION_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) || workers == 0 {
        return None;
    }
    let w = usize::from_str_radix(&id[24..], 16).ok()?;
    Some(w % workers)
}

/// An unguessable token that is not a session id: 64 random bits as 16
/// uppercase hex digits.
pub fn token() -> String {
    hex(&random_bytes::<8>(), true)
}

/// A secret: 128 random bits as 32 lowercase hex digits (the generated
/// operator token, a chat's `secureKey`).
pub fn secret_token() -> String {
    hex(&random_bytes::<16>(), false)
}

/// A request id (module actions and `/request` calls): a [`token`], a
/// hyphen, then `seq` in decimal (the caller's running count), e.g.
/// `0123456789ABCDEF-42`.
pub fn request_id(seq: u64) -> String {
    format!("{}-{seq}", token())
}

/// A GMS service id, shaped like the ids GMS itself returns
/// (`369-01d32409-b4bb-4884-b266-02d8216fe5e3`): a decimal prefix below
/// 1000, then 32 random lowercase hex digits grouped 8-4-4-4-12 (a UUID's
/// layout, without its version digits).
pub fn gms_service_id() -> String {
    let prefix = (random_u64() % 1000) as u16;
    let body = hex(&random_bytes::<16>(), false);
    format!(
        "{prefix}-{}-{}-{}-{}-{}",
        &body[0..8],
        &body[8..12],
        &body[12..16],
        &body[16..20],
        &body[20..32]
    )
}

/// A CometD client id: 128 random bits as 32 lowercase hex digits (the
/// Bayeux protocol only asks for a unique string; knowing one must not let
/// anyone guess another).
pub fn client_id() -> String {
    hex(&random_bytes::<16>(), false)
}

/// An id for an object a backend makes (chats, parties, reservations,
/// protocol streams): 64 random bits as 16 lowercase hex digits.
pub fn object_id() -> String {
    hex(&random_bytes::<8>(), false)
}

/// The id of an event kept in the store until its target session has it
/// (`crate::server::outbox`): the start time of the process that made it
/// (ms since the epoch) as 12 lowercase hex digits, a hyphen, then `seq`
/// (its running count in that process) as 10, e.g.
/// `019a7c3e5f21-000000002a`. Ids sort in the order they were made, also
/// across restarts while the wall clock moves forward.
pub fn letter_id(process_start_ms: u64, seq: u64) -> String {
    format!(
        "{:012x}-{:010x}",
        process_start_ms & 0xffff_ffff_ffff,
        seq & 0xff_ffff_ffff
    )
}

/// A session id the engine makes when its host gives none (`ors run`,
/// tests): three groups of lowercase hex digits, 12, 4 and 1 to 8 long
/// (`5f1c0e9a3b7d-02c4-9e1f`), of 96 random bits in all.
pub fn engine_session_id() -> String {
    let [a, b] = [random_u64(), random_u64()];
    format!(
        "{:012x}-{:04x}-{:x}",
        a & 0xffff_ffff_ffff,
        (a >> 48) & 0xffff,
        b & 0xffff_ffff
    )
}

/// The id the engine gives a `<send>` without `id`: `session.send` then
/// `seq` (SCXML 1.0 §6.2.1 leaves the form to the platform), e.g.
/// `5f1c0e9a3b7d-02c4-9e1f.send3`.
pub fn send_id(session: &str, seq: u64) -> String {
    format!("{session}.send{seq}")
}

/// The id the engine gives an `<invoke>` without `id`: `state.session.seq`
/// (SCXML 1.0 §6.4.1 asks for the state id, a `.` and a unique suffix),
/// e.g. `s1.5f1c0e9a3b7d-02c4-9e1f.2`.
pub fn invoke_id(state: &str, session: &str, seq: u64) -> String {
    format!("{state}.{session}.{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn is_hex(s: &str, upper: bool) -> bool {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_digit()
                    || if upper {
                        (b'A'..=b'F').contains(&b)
                    } else {
                        (b'a'..=b'f').contains(&b)
                    }
            })
    }

    /// Draws `n` ids and checks that none repeats.
    fn distinct(n: usize, make: impl Fn() -> String) -> HashSet<String> {
        let ids: HashSet<String> = (0..n).map(|_| make()).collect();
        assert_eq!(ids.len(), n, "an id repeated in {n} draws");
        ids
    }

    #[test]
    fn session_ids_are_24_random_hex_digits_then_the_worker() {
        for worker in [0usize, 1, 7, 0xab, 0xff] {
            let id = session_id(worker);
            assert_eq!(id.len(), SESSION_ID_LEN, "{id}");
            assert!(is_hex(&id, true), "{id}");
            assert_eq!(&id[24..], format!("{worker:02X}"), "{id}");
            assert_eq!(worker_of(&id, 256), Some(worker), "{id}");
        }
        // Worker numbers above 255 keep their low byte.
        assert_eq!(&session_id(0x1_02)[24..], "02");
    }

    #[test]
    fn worker_of_wraps_and_refuses_malformed_ids() {
        let id = session_id(5);
        assert_eq!(worker_of(&id, 8), Some(5));
        assert_eq!(worker_of(&id, 4), Some(1));
        assert_eq!(worker_of(&id, 0), None);
        assert_eq!(worker_of(&id.to_ascii_lowercase(), 8), Some(5));
        assert_eq!(worker_of(&id[1..], 8), None);
        assert_eq!(worker_of(&format!("{id}0"), 8), None);
        let bad = format!("{}G{}", &id[..10], &id[11..]);
        assert_eq!(worker_of(&bad, 8), None);
        // Multi-byte characters of the right byte length are refused, not
        // sliced through.
        let wide = format!("{}é", &id[..24]);
        assert_eq!(wide.len(), SESSION_ID_LEN);
        assert_eq!(worker_of(&wide, 8), None);
        assert_eq!(worker_of("", 8), None);
    }

    #[test]
    fn session_ids_do_not_collide_and_vary_in_every_random_digit() {
        let ids = distinct(100_000, || session_id(3));
        // Every one of the 24 random positions takes more than one value
        // (a counter or a clock would leave the high digits fixed).
        for pos in 0..24 {
            let seen: HashSet<u8> = ids.iter().map(|id| id.as_bytes()[pos]).collect();
            assert!(seen.len() > 8, "position {pos} took {} values", seen.len());
        }
    }

    #[test]
    fn tokens_and_request_ids_have_their_shapes_and_do_not_collide() {
        let tokens = distinct(100_000, token);
        assert!(tokens.iter().all(|t| t.len() == 16 && is_hex(t, true)));
        let id = request_id(42);
        let (t, n) = id.split_once('-').expect("a hyphen");
        assert!(t.len() == 16 && is_hex(t, true), "{id}");
        assert_eq!(n, "42");
        distinct(10_000, || request_id(1));
    }

    #[test]
    fn gms_service_ids_have_the_gms_shape() {
        let ids = distinct(50_000, gms_service_id);
        let mut prefixes = HashSet::new();
        for id in &ids {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.len(), 6, "{id}");
            let prefix: u32 = parts[0].parse().expect("a decimal prefix");
            assert!(prefix < 1000, "{id}");
            assert_eq!(parts[0], prefix.to_string(), "no leading zeros: {id}");
            prefixes.insert(prefix);
            let lens: Vec<usize> = parts[1..].iter().map(|p| p.len()).collect();
            assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
            assert!(parts[1..].iter().all(|p| is_hex(p, false)), "{id}");
        }
        assert!(prefixes.len() > 900, "{} prefixes", prefixes.len());
    }

    #[test]
    fn client_and_object_ids_are_lowercase_hex_and_do_not_collide() {
        let clients = distinct(100_000, client_id);
        assert!(clients.iter().all(|c| c.len() == 32 && is_hex(c, false)));
        let objects = distinct(100_000, object_id);
        assert!(objects.iter().all(|o| o.len() == 16 && is_hex(o, false)));
    }

    #[test]
    fn engine_session_ids_keep_their_three_groups() {
        let ids = distinct(100_000, engine_session_id);
        for id in &ids {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.len(), 3, "{id}");
            assert_eq!(parts[0].len(), 12, "{id}");
            assert_eq!(parts[1].len(), 4, "{id}");
            assert!((1..=8).contains(&parts[2].len()), "{id}");
            assert!(parts.iter().all(|p| is_hex(p, false)), "{id}");
        }
    }

    #[test]
    fn send_and_invoke_ids_are_numbered_per_session() {
        assert_eq!(send_id("abc-1", 3), "abc-1.send3");
        assert_eq!(invoke_id("s1", "abc-1", 2), "s1.abc-1.2");
        assert_ne!(send_id("abc-1", 3), send_id("abc-1", 4));
        assert_ne!(invoke_id("s1", "a", 1), invoke_id("s2", "a", 1));
    }

    #[test]
    fn hex_writes_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff], true), "000FA5FF");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff], false), "000fa5ff");
        assert_eq!(hex(&[], false), "");
    }
}
