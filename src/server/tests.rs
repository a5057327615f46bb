//! Unit tests of the per-address count.

use super::*;

#[test]
fn an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_as_ipv4() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(address_key(a), address_key(b));
    assert_ne!(address_key(a), address_key(c));
    let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
    assert_eq!(
        address_key(mapped),
        "203.0.113.7".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn a_slot_moves_to_the_client_behind_the_proxy_and_gives_both_back() {
    let state = Arc::new(State::default());
    state.open.store(1, Ordering::Relaxed);
    let mut slot = Slot {
        state: state.clone(),
        key: None,
    };
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let client: IpAddr = "203.0.113.7".parse().unwrap();
    assert!(slot.count_under(proxy, 1));
    assert!(slot.count_under(client, 1));
    {
        let map = state.per_address.lock().unwrap();
        assert_eq!(map.get(&client), Some(&1));
        assert_eq!(map.get(&proxy), None, "the proxy's count was given back");
    }
    state.open.store(2, Ordering::Relaxed);
    let mut second = Slot {
        state: state.clone(),
        key: None,
    };
    assert!(
        !second.count_under(client, 1),
        "one at most from the client"
    );
    assert_eq!(second.key, None);
    drop((slot, second));
    assert!(state.per_address.lock().unwrap().is_empty());
    assert_eq!(state.open.load(Ordering::Relaxed), 0);
}
