//! The Kubernetes manifests in examples/kubernetes, checked without a cluster: every YAML
//! document parses, and the references between objects hold (selectors match pod labels,
//! Service target ports exist on the pods, the StatefulSet's Service is headless, the
//! ConfigMap's barnabas.toml is a valid barnabas config whose listeners and bootstrap servers
//! agree with the ports and broker names, probes hit /ready and /healthy, the HPA targets the
//! Deployment, replicas advertise their pod IP to each other, and Kafka's settings are the
//! safe ones). Dockerfile, Dockerfile.demo and .dockerignore are parsed and checked (no
//! container engine runs on the build machine to build them): numeric non-root user, no
//! embedded broker in production and none on 0.0.0.0 in the demo, a declared data volume,
//! stripped builds, patterns at any depth; the demo's command line goes through
//! `barnabas check-config`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{collections::BTreeMap, process::Command};

use serde_yaml::Value;

type Objects = BTreeMap<(String, String), Value>;

fn manifests() -> Objects {
    let dir = common::workspace_root().join("examples/kubernetes");
    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("kustomization.yaml")).expect("kustomization.yaml"),
    )
    .expect("kustomization parses");
    let mut objects = Objects::new();
    for file in kustomization["resources"].as_sequence().expect("resources") {
        let name = file.as_str().unwrap();
        let text =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            let kind = v["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a document without kind"))
                .to_owned();
            let obj = v["metadata"]["name"]
                .as_str()
                .expect("metadata.name")
                .to_owned();
            assert!(v["apiVersion"].is_string(), "{kind}/{obj}: apiVersion");
            assert!(
                objects.insert((kind.clone(), obj.clone()), v).is_none(),
                "{kind}/{obj} twice"
            );
        }
    }
    objects
}

use serde::Deserialize;

fn get<'a>(objects: &'a Objects, kind: &str, name: &str) -> &'a Value {
    objects
        .get(&(kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string"))
}

/// Pod templates (of Deployments and StatefulSets) whose labels the selector matches.
fn pods_selected<'a>(objects: &'a Objects, selector: &Value) -> Vec<&'a Value> {
    let wanted = selector.as_mapping().expect("selector");
    objects
        .iter()
        .filter(|((kind, _), _)| kind == "Deployment" || kind == "StatefulSet")
        .map(|(_, v)| &v["spec"]["template"])
        .filter(|t| {
            wanted
                .iter()
                .all(|(k, val)| t["metadata"]["labels"].get(k) == Some(val))
        })
        .collect()
}

/// Container ports of a pod template: name → number.
fn ports(template: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in template["spec"]["containers"].as_sequence().unwrap() {
        for p in c["ports"].as_sequence().into_iter().flatten() {
            out.insert(
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_u64().unwrap(),
            );
        }
    }
    out
}

fn env(template: &Value, name: &str) -> String {
    env_entry(template, name)["value"]
        .as_str()
        .unwrap_or_else(|| panic!("env {name}"))
        .to_owned()
}

fn env_entry<'a>(template: &'a Value, name: &str) -> &'a Value {
    template["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name}"))
}

#[test]
fn the_manifests_parse_and_their_references_hold() {
    let objects = manifests();

    // Services select pods, and their target ports exist on those pods.
    for ((kind, name), svc) in objects.iter().filter(|((k, _), _)| k == "Service") {
        let pods = pods_selected(&objects, &svc["spec"]["selector"]);
        assert!(!pods.is_empty(), "{kind}/{name} selects no pods");
        for pod in pods {
            let ports = ports(pod);
            for p in svc["spec"]["ports"].as_sequence().unwrap() {
                let target = &p["targetPort"];
                let ok = match target {
                    Value::String(n) => ports.contains_key(n),
                    Value::Number(n) => ports.values().any(|v| Some(*v) == n.as_u64()),
                    _ => false,
                };
                assert!(
                    ok,
                    "{kind}/{name}: target port {target:?} is not on its pods ({ports:?})"
                );
            }
        }
    }
    // Workload selectors match their own templates.
    for ((kind, name), w) in objects
        .iter()
        .filter(|((k, _), _)| k == "Deployment" || k == "StatefulSet")
    {
        for (k, v) in w["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
            assert_eq!(
                w["spec"]["template"]["metadata"]["labels"].get(k),
                Some(v),
                "{kind}/{name} selector"
            );
        }
    }
    // PodDisruptionBudgets select pods.
    for ((_, name), pdb) in objects
        .iter()
        .filter(|((k, _), _)| k == "PodDisruptionBudget")
    {
        assert!(
            !pods_selected(&objects, &pdb["spec"]["selector"]["matchLabels"]).is_empty(),
            "PDB {name}"
        );
    }

    // Kafka: a StatefulSet of 3 behind a headless Service, the safe settings.
    let kafka = get(&objects, "StatefulSet", "kafka");
    let headless = get(&objects, "Service", str_at(kafka, &["spec", "serviceName"]));
    assert_eq!(
        str_at(headless, &["spec", "clusterIP"]),
        "None",
        "the StatefulSet's Service is headless"
    );
    let replicas = kafka["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 3);
    let tpl = &kafka["spec"]["template"];
    assert_eq!(env(tpl, "KAFKA_DEFAULT_REPLICATION_FACTOR"), "3");
    assert_eq!(env(tpl, "KAFKA_MIN_INSYNC_REPLICAS"), "2");
    assert_eq!(env(tpl, "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"), "false");
    let voters = env(tpl, "KAFKA_CONTROLLER_QUORUM_VOTERS");
    for i in 0..replicas {
        assert!(
            voters.contains(&format!(
                "{i}@kafka-{i}.{}:",
                str_at(headless, &["metadata", "name"])
            )),
            "{voters}"
        );
    }
    let command = tpl["spec"]["containers"][0]["command"]
        .as_sequence()
        .unwrap();
    let script = command.last().unwrap().as_str().unwrap();
    assert!(
        script.contains("KAFKA_NODE_ID=\"${POD_NAME##*-}\""),
        "node id from the pod ordinal"
    );
    assert!(
        script.contains("${POD_NAME}.kafka-headless"),
        "advertised name from the pod DNS name"
    );
    assert!(kafka["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .is_some_and(|v| !v.is_empty()));
    let message_max: usize = env(tpl, "KAFKA_MESSAGE_MAX_BYTES").parse().unwrap();

    // barnabas: the ConfigMap is a valid config, and it agrees with the pods and Kafka.
    let deployment = get(&objects, "Deployment", "barnabas");
    assert!(
        deployment["spec"]["replicas"].as_u64().unwrap() >= 2,
        "2+ replicas"
    );
    let pod = &deployment["spec"]["template"];
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"].is_mapping())
        .expect("config volume");
    let cm = get(
        &objects,
        "ConfigMap",
        str_at(volume, &["configMap", "name"]),
    );
    let toml = str_at(cm, &["data", "barnabas.toml"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("barnabas.toml");
    std::fs::write(&path, toml).unwrap();
    let config =
        barnabas::config::Config::load(Some(&path), &barnabas::config::Overrides::default())
            .unwrap_or_else(|e| panic!("the ConfigMap's barnabas.toml: {e}"));
    let args: Vec<&str> = pod["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mount = pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
        .as_str()
        .unwrap();
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--config" && w[1] == format!("{mount}/barnabas.toml")),
        "{args:?}"
    );
    let ports = ports(pod);
    for (name, listen) in [
        ("http", &config.http.listen),
        ("mqtt", &config.mqtt.listen),
        ("amqp", &config.amqp.listen),
    ] {
        let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(
            ports.get(name),
            Some(&port),
            "{name}: config listens on {listen}"
        );
    }
    for server in config.kafka.bootstrap_servers.split(',') {
        let host = server.split(':').next().unwrap();
        let (pod_name, service) = host.split_once('.').unwrap();
        assert_eq!(service, str_at(headless, &["metadata", "name"]), "{server}");
        let ordinal: u64 = pod_name.strip_prefix("kafka-").unwrap().parse().unwrap();
        assert!(ordinal < replicas, "{server} is not a broker pod");
    }
    assert!(
        message_max >= config.limits.max_message_bytes,
        "Kafka takes the gateway's largest message"
    );
    assert_eq!(config.kafka.default_replication_factor, 3);
    // Replicas reach each other's HTTP listener at the pod IP (consumer forwarding).
    assert_eq!(
        str_at(
            env_entry(pod, "POD_IP"),
            &["valueFrom", "fieldRef", "fieldPath"]
        ),
        "status.podIP"
    );
    assert_eq!(
        env(pod, "BARNABAS_HTTP__ADVERTISED_ADDRESS"),
        format!("$(POD_IP):{}", ports["http"])
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        str_at(container, &["readinessProbe", "httpGet", "path"]),
        "/ready"
    );
    assert_eq!(
        str_at(container, &["livenessProbe", "httpGet", "path"]),
        "/healthy"
    );
    assert_eq!(
        str_at(container, &["readinessProbe", "httpGet", "port"]),
        "http"
    );
    assert!(
        container["resources"]["requests"]["cpu"].is_string(),
        "CPU request (the HPA needs it)"
    );
    let hpa = get(&objects, "HorizontalPodAutoscaler", "barnabas");
    assert_eq!(
        str_at(hpa, &["spec", "scaleTargetRef", "kind"]),
        "Deployment"
    );
    get(
        &objects,
        "Deployment",
        str_at(hpa, &["spec", "scaleTargetRef", "name"]),
    );
}

fn barnabas_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barnabas"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BARNABAS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

// ---------------------------------------------------------------------------------------
// Dockerfiles

/// One instruction: keyword (upper case) and its arguments, continuation lines joined,
/// comments dropped; the index of the build stage it belongs to.
struct Instruction {
    stage: usize,
    keyword: String,
    args: String,
}

fn dockerfile(name: &str) -> Vec<Instruction> {
    let text = std::fs::read_to_string(common::workspace_root().join(name)).unwrap();
    let mut out = Vec::new();
    let mut stage = 0;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let keyword = keyword.to_uppercase();
        if keyword == "FROM" && !out.is_empty() {
            stage += 1;
        }
        out.push(Instruction {
            stage,
            keyword,
            args: args.trim().to_owned(),
        });
    }
    assert!(pending.is_empty(), "{name}: ends in a continuation");
    out
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not the exec (JSON) form: {args}: {e}"))
}

fn final_stage(instructions: &[Instruction]) -> impl Iterator<Item = &Instruction> {
    let last = instructions.last().unwrap().stage;
    instructions.iter().filter(move |i| i.stage == last)
}

fn check_common_dockerfile(name: &str, instructions: &[Instruction]) {
    for from in instructions.iter().filter(|i| i.keyword == "FROM") {
        let image = from.args.split_whitespace().next().unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest",
            "{name}: FROM {image} unpinned"
        );
    }
    let users: Vec<&Instruction> = final_stage(instructions)
        .filter(|i| i.keyword == "USER")
        .collect();
    let user = &users
        .last()
        .unwrap_or_else(|| panic!("{name}: no USER"))
        .args;
    let ids: Vec<u32> = user
        .split(':')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| panic!("{name}: USER {user} is not numeric"))
        })
        .collect();
    assert!(ids.iter().all(|&id| id > 0), "{name}: USER {user} is root");
    let env: String = instructions
        .iter()
        .filter(|i| i.keyword == "ENV")
        .map(|i| i.args.clone())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        env.contains("CARGO_PROFILE_RELEASE_STRIP=true"),
        "{name}: stripped"
    );
    assert!(
        env.contains("CARGO_PROFILE_RELEASE_DEBUG=false"),
        "{name}: no debug info"
    );
    for i in instructions {
        assert!(
            !i.args.contains("0.0.0.0:9092") && !i.args.contains("--embedded-kafka=0.0.0.0"),
            "{name}: the embedded broker on every interface: {} {}",
            i.keyword,
            i.args
        );
        if i.keyword == "COPY" {
            assert!(
                !i.args.contains("config/"),
                "{name}: a baked-in config: {}",
                i.args
            );
        }
    }
    assert!(
        final_stage(instructions).any(|i| i.keyword == "ENTRYPOINT"),
        "{name}: ENTRYPOINT"
    );
}

#[test]
fn the_production_dockerfile_builds_a_lean_gateway_without_a_broker() {
    let ins = dockerfile("Dockerfile");
    check_common_dockerfile("Dockerfile", &ins);
    let arg = ins
        .iter()
        .find(|i| i.keyword == "ARG" && i.args.contains("--no-default-features"))
        .expect("an ARG defaulting to --no-default-features");
    let arg_name = arg.args.split('=').next().unwrap();
    let build = ins
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .unwrap();
    assert!(build.args.contains("--release") && build.args.contains("--locked"));
    assert!(
        build.args.contains(&format!("${{{arg_name}}}"))
            || build.args.contains(&format!("${arg_name}")),
        "the build uses {arg_name}: {}",
        build.args
    );
    for i in final_stage(&ins) {
        match i.keyword.as_str() {
            "EXPOSE" => assert!(!i.args.split_whitespace().any(|p| p == "9092")),
            "CMD" | "ENTRYPOINT" => {
                assert!(!i.args.contains("embedded"), "{}", i.args);
                exec_form(&i.args);
            }
            _ => {}
        }
    }
}

#[test]
fn the_demo_dockerfile_keeps_the_broker_on_loopback_and_data_in_a_volume() {
    let ins = dockerfile("Dockerfile.demo");
    check_common_dockerfile("Dockerfile.demo", &ins);
    let last: Vec<&Instruction> = final_stage(&ins).collect();
    let volume = last.iter().find(|i| i.keyword == "VOLUME").expect("VOLUME");
    assert_eq!(volume.args, "/var/lib/barnabas");
    let cmd = exec_form(&last.iter().find(|i| i.keyword == "CMD").unwrap().args);
    assert_eq!(cmd[0], "run");
    assert!(
        cmd.windows(2)
            .any(|w| w[0] == "--data-dir" && w[1] == "/var/lib/barnabas"),
        "{cmd:?}"
    );
    let embedded = cmd
        .iter()
        .find_map(|a| a.strip_prefix("--embedded-kafka="))
        .expect("--embedded-kafka=ADDR spelled out");
    assert!(embedded.starts_with("127.0.0.1:"), "{embedded}");
    // The directory exists and belongs to the USER before the VOLUME is declared.
    let user = &last
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .unwrap()
        .args;
    let pos = |pred: &dyn Fn(&Instruction) -> bool| last.iter().position(|i| pred(i)).unwrap();
    let chown =
        pos(&|i| i.keyword == "RUN" && i.args.contains(&format!("chown {user} /var/lib/barnabas")));
    assert!(chown < pos(&|i| i.keyword == "VOLUME"));

    // The command line, as the image runs it, with the real binary (check-config instead of
    // run, the data directory in a temporary one).
    let data = tempfile::tempdir().unwrap();
    let args: Vec<String> = cmd[1..]
        .iter()
        .map(|a| {
            if a == "/var/lib/barnabas" {
                data.path().display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let out = barnabas_bin()
        .arg("check-config")
        .args(&args)
        .current_dir(data.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "embedded broker on {embedded} (data in {})",
            data.path().display()
        )),
        "{stdout}"
    );
}

#[test]
fn dockerignore_patterns_match_at_any_depth() {
    let text = std::fs::read_to_string(common::workspace_root().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["**/target", "**/.git", "**/.venv"] {
        assert!(patterns.contains(&needed), ".dockerignore: {needed}");
    }
    for p in &patterns {
        // A bare name (`target`) only matches at the root of the context: either `**/` for
        // any depth, or a path with a directory (anchored on purpose).
        assert!(
            p.starts_with("**/") || p.contains('/') || p.starts_with('!'),
            ".dockerignore: `{p}` matches only at the root; write **/{p}"
        );
    }
    // What the build needs is not ignored.
    for kept in ["crates", "vendor", "Cargo.toml", "Cargo.lock", "tests"] {
        assert!(
            !patterns.iter().any(|p| p.trim_start_matches("**/") == kept),
            ".dockerignore drops {kept}, which the build needs"
        );
    }
}
