//! Hand-made MQTT packets over a plain socket, for what a stock client will not do on
//! purpose (misbehave, hold back its reads, set a v5 will delay, send DISCONNECT 0x04).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// A remaining length in MQTT's variable-length encoding.
pub fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    varint(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

pub fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads one packet: (first byte, body); `None` at EOF or timeout.
pub fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok()?;
        len |= usize::from(b[0] & 0x7f) << shift;
        shift += 7;
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

/// An MQTT 3.1.1 CONNECT (no keep-alive), with an optional login.
pub fn connect_v311(client_id: &str, clean: bool, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = Vec::new();
    string("MQTT", &mut body);
    body.push(4);
    let mut flags = if clean { 0x02 } else { 0x00 };
    if login.is_some() {
        flags |= 0xc0;
    }
    body.push(flags);
    body.extend_from_slice(&0u16.to_be_bytes());
    string(client_id, &mut body);
    if let Some((user, password)) = login {
        string(user, &mut body);
        string(password, &mut body);
    }
    packet(0x10, &body)
}

/// A SUBSCRIBE (packet id 1) of one filter at `qos` (`v5`: with an empty property list).
pub fn subscribe(filter: &str, qos: u8, v5: bool) -> Vec<u8> {
    let mut body = vec![0, 1];
    if v5 {
        body.push(0);
    }
    string(filter, &mut body);
    body.push(qos);
    packet(0x82, &body)
}

/// The packet id and payload of a PUBLISH body at QoS 1 or 2 (`v5`: its properties skipped).
pub fn publish_id_and_payload(body: &[u8], v5: bool) -> (u16, Vec<u8>) {
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let at = 2 + topic_len;
    let id = u16::from_be_bytes([body[at], body[at + 1]]);
    let mut at = at + 2;
    if v5 {
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = body[at];
            at += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        at += len;
    }
    (id, body[at..].to_vec())
}

/// Asserts nothing arrives on `s` within `within` (the socket stays open and silent).
pub fn assert_silent(s: &mut TcpStream, within: Duration, what: &str) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut one = [0u8; 1];
    match s.read(&mut one) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("{what}: {other:?} {one:?}"),
    }
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
}

/// A v5 will: topic, payload, Will Delay Interval (seconds).
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a str,
    pub delay: u32,
}

/// An MQTT 5 CONNECT: clean start, no keep-alive, Session Expiry Interval `expiry`, an
/// optional will and login.
pub fn connect_v5(
    client_id: &str,
    expiry: u32,
    will: Option<Will<'_>>,
    login: Option<(&str, &str)>,
) -> Vec<u8> {
    connect_v5_props(client_id, true, &expiry_property(expiry), will, login)
}

/// The CONNECT property Session Expiry Interval.
pub fn expiry_property(expiry: u32) -> Vec<u8> {
    let mut props = vec![0x11];
    props.extend_from_slice(&expiry.to_be_bytes());
    props
}

/// An MQTT 5 CONNECT: Clean Start `clean`, no keep-alive, these encoded CONNECT properties,
/// an optional will and login.
pub fn connect_v5_props(
    client_id: &str,
    clean: bool,
    props: &[u8],
    will: Option<Will<'_>>,
    login: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    string("MQTT", &mut body);
    body.push(5);
    let mut flags = if clean { 0x02 } else { 0x00 };
    if will.is_some() {
        flags |= 0x04;
    }
    if login.is_some() {
        flags |= 0xc0;
    }
    body.push(flags);
    body.extend_from_slice(&0u16.to_be_bytes());
    varint(props.len(), &mut body);
    body.extend_from_slice(props);
    string(client_id, &mut body);
    if let Some(w) = will {
        // Will properties: Will Delay Interval.
        body.extend_from_slice(&[5, 0x18]);
        body.extend_from_slice(&w.delay.to_be_bytes());
        string(w.topic, &mut body);
        string(w.payload, &mut body);
    }
    if let Some((user, password)) = login {
        string(user, &mut body);
        string(password, &mut body);
    }
    packet(0x10, &body)
}

/// A QoS 1 PUBLISH (3.1.1 layout; `v5` adds an empty property length).
pub fn publish_qos1(topic: &str, id: u16, payload: &[u8], v5: bool) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic, &mut body);
    body.extend_from_slice(&id.to_be_bytes());
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

/// Connects, sends `connect` and asserts the CONNACK accepts it (3.1.1 code 0 / v5 0x00).
pub fn connected(addr: SocketAddr, connect: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(connect).unwrap();
    let (kind, body) = read_packet(&mut s).expect("CONNACK");
    assert_eq!((kind, body[1]), (0x20, 0), "CONNACK accepted");
    s
}

/// Output of a finished mosquitto client, stdout then stderr.
pub fn all(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The CONNACK code `mosquitto_sub -d` printed (`received CONNACK (135)`).
pub fn connack(out: &str) -> Option<u8> {
    let at = out.find("received CONNACK (")? + "received CONNACK (".len();
    out[at..].split(')').next()?.parse().ok()
}

/// The SUBACK codes `mosquitto_sub -d` printed (`Subscribed (mid: 1): 0, 151`).
pub fn suback(out: &str) -> Vec<u8> {
    out.lines()
        .find_map(|l| l.strip_prefix("Subscribed (mid: "))
        .and_then(|rest| rest.split_once("): "))
        .map(|(_, codes)| {
            codes
                .split(", ")
                .filter_map(|c| c.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
