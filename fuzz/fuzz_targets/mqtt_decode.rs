//! Arbitrary bytes as an MQTT connection: the version sniffing, CONNECT and every following
//! packet through the codec and barnabas' version-neutral view (`wire`), as a session reads
//! them. Must never panic, whatever arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        let io = tokio::io::join(data, tokio::io::sink());
        if let Ok((mut conn, _info)) = barnabas_mqtt::wire::accept(io, 65_536).await {
            for _ in 0..256 {
                if conn.next().await.is_err() {
                    break;
                }
            }
        }
    });
});
