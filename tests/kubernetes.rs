//! The deployment examples, checked without a cluster or a container engine (neither runs on
//! the build machine):
//!
//! - examples/kubernetes: both kustomize overlays (`production`, `dev`) are rendered by a
//!   small renderer of our own, limited to what the overlays use (resources, a
//!   configMapGenerator with kustomize's content hash, patches by file as strategic merges,
//!   labels); where `kubectl` is installed its `kubectl kustomize` output must be the same.
//!   Every rendered object passes the Kubernetes JSON schemas (`kubernetes-validate`, strict,
//!   Kubernetes 1.30 and 1.37); each overlay's barnabas.toml passes `barnabas check-config`
//!   with its Secrets' files where the pod mounts them; and a lint of our own holds: probes,
//!   security contexts, PDBs, NetworkPolicies, no LoadBalancer without authentication, no
//!   `replicas` beside an HPA, a grace period covering the preStop sleep plus the gateway's
//!   worst-case drain (computed from its code), a memory limit covering the configured
//!   buffers, an advertised address that is a URL for IPv4 and IPv6 pods, a Kafka readiness
//!   probe that fails while the broker is out of sync, and the references between objects.
//! - Dockerfile, Dockerfile.demo, .dockerignore: parsed and checked (numeric non-root user,
//!   no embedded broker in production and none on 0.0.0.0 in the demo, a declared data volume,
//!   stripped builds, patterns at any depth); the demo's command line is run through
//!   `barnabas check-config`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

// ---------------------------------------------------------------------------------------
// A kustomize renderer limited to what examples/kubernetes uses.

fn examples() -> PathBuf {
    common::workspace_root().join("examples/kubernetes")
}

const OVERLAYS: [&str; 2] = ["production", "dev"];

fn overlay_dir(name: &str) -> PathBuf {
    examples().join("overlays").join(name)
}

fn parse_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().expect("kind")
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().expect("metadata.name")
}

/// kustomize's name suffix of a generated ConfigMap (api/hasher): sha256 of the JSON
/// `{"data":…,"kind":"ConfigMap","name":""}` as Go encodes it (sorted keys, `<>&` escaped;
/// the name is empty because kustomize looks it up by a path its lookup does not resolve),
/// first 10 hex digits with 0 1 3 a e replaced by g h k m t.
fn kustomize_hash(data: &BTreeMap<String, String>) -> String {
    let json = serde_json::json!({"data": data, "kind": "ConfigMap", "name": ""});
    let text = serde_json::to_string(&json)
        .unwrap()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    barnabas_core::auth::sha256_hex(text.as_bytes())[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// Strategic merge as Kubernetes does it for the fields our patches touch: maps merge, lists
/// of objects merge by their merge key (containers, env, volumes: name; volumeMounts:
/// mountPath; container ports: containerPort), other lists are replaced.
fn strategic_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Mapping(t), Value::Mapping(p)) => {
            for (k, pv) in p {
                if pv.is_null() {
                    t.remove(k);
                    continue;
                }
                let both_maps = t.get(k).is_some_and(Value::is_mapping) && pv.is_mapping();
                let both_lists = t.get(k).is_some_and(Value::is_sequence) && pv.is_sequence();
                if both_maps {
                    strategic_merge(t.get_mut(k).unwrap(), pv);
                } else if both_lists {
                    merge_list(
                        k.as_str().unwrap_or(""),
                        t.get_mut(k).unwrap().as_sequence_mut().unwrap(),
                        pv.as_sequence().unwrap(),
                    );
                } else {
                    t.insert(k.clone(), pv.clone());
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn merge_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) {
    let key = match field {
        "volumeMounts" => "mountPath",
        "ports" if patch.iter().all(|p| p.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => "name",
    };
    if !patch.iter().all(|p| p.get(key).is_some()) {
        *target = patch.to_vec();
        return;
    }
    // kustomize (kyaml) lists the patch's elements first, merged into their originals,
    // then the originals the patch does not name.
    let mut merged = Vec::with_capacity(target.len() + patch.len());
    for p in patch {
        let mut item = match target.iter().position(|t| t.get(key) == p.get(key)) {
            Some(i) => target.remove(i),
            None => Value::Mapping(Mapping::new()),
        };
        strategic_merge(&mut item, p);
        merged.push(item);
    }
    merged.append(target);
    *target = merged;
}

/// Renders the kustomization in `dir` (recursively for directory resources).
fn render(dir: &Path) -> Vec<Value> {
    let kpath = dir.join("kustomization.yaml");
    let k = &parse_docs(&kpath)[0];
    for key in k.as_mapping().unwrap().keys() {
        let key = key.as_str().unwrap();
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "configMapGenerator",
                "patches",
                "labels"
            ]
            .contains(&key),
            "{}: `{key}` is beyond what this test's renderer does; extend it (or check \
             against kubectl kustomize)",
            kpath.display()
        );
    }
    let mut docs = Vec::new();
    for r in k["resources"].as_sequence().into_iter().flatten() {
        let path = dir.join(r.as_str().unwrap());
        if path.is_dir() {
            docs.extend(render(&path));
        } else {
            docs.extend(parse_docs(&path));
        }
    }
    // configMapGenerator: files only, hashed names, references renamed.
    let mut renamed = BTreeMap::new();
    for g in k["configMapGenerator"].as_sequence().into_iter().flatten() {
        for key in g.as_mapping().unwrap().keys() {
            assert!(
                ["name", "files"].contains(&key.as_str().unwrap()),
                "configMapGenerator: {key:?} not supported here"
            );
        }
        let base = g["name"].as_str().unwrap();
        let mut data = BTreeMap::new();
        for f in g["files"].as_sequence().unwrap() {
            let f = f.as_str().unwrap();
            let (key, file) = f
                .split_once('=')
                .unwrap_or((Path::new(f).file_name().unwrap().to_str().unwrap(), f));
            data.insert(
                key.to_owned(),
                std::fs::read_to_string(dir.join(file)).unwrap(),
            );
        }
        let hashed = format!("{base}-{}", kustomize_hash(&data));
        let mut cm = Mapping::new();
        cm.insert("apiVersion".into(), "v1".into());
        cm.insert("kind".into(), "ConfigMap".into());
        let mut md = Mapping::new();
        md.insert("name".into(), hashed.clone().into());
        cm.insert("metadata".into(), md.into());
        cm.insert("data".into(), serde_yaml::to_value(&data).unwrap());
        docs.push(cm.into());
        renamed.insert(base.to_owned(), hashed);
    }
    for p in k["patches"].as_sequence().into_iter().flatten() {
        assert!(
            p.as_mapping().unwrap().len() == 1 && p["path"].is_string(),
            "patches: only `path:` (a strategic merge patch file) is supported here"
        );
        for patch in parse_docs(&dir.join(p["path"].as_str().unwrap())) {
            let target = docs
                .iter_mut()
                .find(|d| kind(d) == kind(&patch) && name(d) == name(&patch))
                .unwrap_or_else(|| {
                    panic!("patch for {} {}: no target", kind(&patch), name(&patch))
                });
            strategic_merge(target, &patch);
        }
    }
    for l in k["labels"].as_sequence().into_iter().flatten() {
        for key in l.as_mapping().unwrap().keys() {
            assert_eq!(
                key.as_str(),
                Some("pairs"),
                "labels: only `pairs` supported here"
            );
        }
        for d in &mut docs {
            let md = at_mut(d, &["metadata"]).unwrap().as_mapping_mut().unwrap();
            if !md.contains_key("labels") {
                md.insert("labels".into(), Mapping::new().into());
            }
            for (lk, lv) in l["pairs"].as_mapping().unwrap() {
                md.get_mut("labels")
                    .unwrap()
                    .as_mapping_mut()
                    .unwrap()
                    .insert(lk.clone(), lv.clone());
            }
        }
    }
    // Name references to generated ConfigMaps: pod volumes, envFrom, configMapKeyRef.
    for d in &mut docs {
        if !matches!(kind(d), "Deployment" | "StatefulSet") {
            continue;
        }
        let Some(spec) = at_mut(d, &["spec", "template", "spec"]) else {
            continue;
        };
        if let Some(volumes) = at_mut(spec, &["volumes"]).and_then(Value::as_sequence_mut) {
            for v in volumes {
                rename(at_mut(v, &["configMap", "name"]), &renamed);
            }
        }
        if let Some(cs) = at_mut(spec, &["containers"]).and_then(Value::as_sequence_mut) {
            for c in cs {
                if let Some(list) = at_mut(c, &["envFrom"]).and_then(Value::as_sequence_mut) {
                    for e in list {
                        rename(at_mut(e, &["configMapRef", "name"]), &renamed);
                    }
                }
                if let Some(list) = at_mut(c, &["env"]).and_then(Value::as_sequence_mut) {
                    for e in list {
                        rename(
                            at_mut(e, &["valueFrom", "configMapKeyRef", "name"]),
                            &renamed,
                        );
                    }
                }
            }
        }
    }
    docs
}

/// The value at `path`, without inserting anything on the way (IndexMut would).
fn at_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        cur = cur.as_mapping_mut()?.get_mut(*p)?;
    }
    Some(cur)
}

fn rename(v: Option<&mut Value>, renamed: &BTreeMap<String, String>) {
    if let Some(v) = v {
        if let Some(new) = v.as_str().and_then(|s| renamed.get(s)) {
            *v = new.clone().into();
        }
    }
}

/// A rendered overlay, by (kind, name).
struct Rendered {
    objects: BTreeMap<(String, String), Value>,
}

impl Rendered {
    fn of(overlay: &str) -> Self {
        let mut objects = BTreeMap::new();
        for v in render(&overlay_dir(overlay)) {
            assert!(
                v["apiVersion"].is_string(),
                "{} {}: apiVersion",
                kind(&v),
                name(&v)
            );
            let key = (kind(&v).to_owned(), name(&v).to_owned());
            assert!(objects.insert(key.clone(), v).is_none(), "{key:?} twice");
        }
        Self { objects }
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind}/{name}"))
    }

    fn all(&self, wanted: &str) -> impl Iterator<Item = &Value> + '_ {
        let wanted = wanted.to_owned();
        self.objects
            .iter()
            .filter(move |((k, _), _)| *k == wanted)
            .map(|(_, v)| v)
    }

    fn workloads(&self) -> impl Iterator<Item = &Value> + '_ {
        self.objects
            .iter()
            .filter(|((k, _), _)| k == "Deployment" || k == "StatefulSet")
            .map(|(_, v)| v)
    }

    /// Pod templates whose labels `selector` (a matchLabels map) matches.
    fn pods_selected(&self, selector: &Value) -> Vec<&Value> {
        self.workloads()
            .map(|w| &w["spec"]["template"])
            .filter(|t| labels_match(selector, &t["metadata"]["labels"]))
            .collect()
    }

    fn gateway(&self) -> &Value {
        self.get("Deployment", "barnabas")
    }

    fn kafka(&self) -> &Value {
        self.get("StatefulSet", "kafka")
    }

    /// The gateway's barnabas.toml (from the ConfigMap its pod mounts) and that ConfigMap.
    fn gateway_toml(&self) -> (String, &Value) {
        let pod = &self.gateway()["spec"]["template"];
        let volume = pod["spec"]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["configMap"].is_mapping())
            .expect("config volume");
        let cm = self.get("ConfigMap", str_at(volume, &["configMap", "name"]));
        (str_at(cm, &["data", "barnabas.toml"]).to_owned(), cm)
    }

    /// The gateway's config, parsed only: `Config::load` would also read the Secrets'
    /// files, which `gateway_configs_pass_check_config` provides.
    fn gateway_config(&self) -> barnabas::config::Config {
        toml::from_str(&self.gateway_toml().0).expect("barnabas.toml parses")
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .expect("selector")
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string"))
}

fn containers(template: &Value) -> &Vec<Value> {
    template["spec"]["containers"].as_sequence().unwrap()
}

/// Container ports of a pod template: name → number.
fn ports(template: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in containers(template) {
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
    containers(template)[0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name}"))["value"]
        .as_str()
        .unwrap_or_else(|| panic!("env {name}"))
        .to_owned()
}

/// Kubernetes memory quantity in bytes (the suffixes the manifests use).
fn quantity_bytes(q: &str) -> u64 {
    for (suffix, factor) in [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    q.parse().unwrap()
}

fn port_of(listen: &str) -> Option<u64> {
    (listen != "off").then(|| listen.rsplit(':').next().unwrap().parse().unwrap())
}

/// `Duration::from_secs(N)` of `const NAME` in a source file of the workspace.
fn const_secs(file: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(common::workspace_root().join(file)).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("const {name}:")))
        .unwrap_or_else(|| panic!("{file}: no const {name}"));
    let n = line
        .split("from_secs(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("{file}: {name} is not Duration::from_secs(N): {line}"));
    n.parse().unwrap()
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
// Kubernetes

#[test]
fn overlays_render_and_agree_with_kubectl_kustomize() {
    for overlay in OVERLAYS {
        let ours = Rendered::of(overlay);
        assert!(
            ours.objects.len() >= 8,
            "{overlay}: {:?}",
            ours.objects.keys()
        );
        // The real kustomize, where it is installed (kubectl bundles it).
        let Ok(out) = Command::new("kubectl")
            .args(["kustomize"])
            .arg(overlay_dir(overlay))
            .output()
        else {
            eprintln!("kubectl is not installed: rendered by this test's renderer only");
            continue;
        };
        assert!(
            out.status.success(),
            "kubectl kustomize {overlay}: {}",
            common::text(&out)
        );
        let theirs: BTreeMap<(String, String), Value> =
            serde_yaml::Deserializer::from_slice(&out.stdout)
                .map(|d| Value::deserialize(d).unwrap())
                .map(|v| ((kind(&v).to_owned(), name(&v).to_owned()), v))
                .collect();
        assert_eq!(
            ours.objects.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{overlay}: objects (and generated names) differ from kubectl kustomize"
        );
        for (key, v) in &ours.objects {
            assert_eq!(
                v, &theirs[key],
                "{overlay}: {key:?} differs from kubectl kustomize"
            );
        }
    }
}

#[test]
fn rendered_manifests_pass_the_kubernetes_schemas_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for overlay in OVERLAYS {
        let rendered = Rendered::of(overlay);
        let text = rendered
            .objects
            .values()
            .map(|v| serde_yaml::to_string(v).unwrap())
            .collect::<Vec<_>>()
            .join("---\n");
        let path = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    // The oldest Kubernetes still commonly run, and the newest kubernetes-validate bundles.
    for version in ["1.30.0", "1.37.0"] {
        let out = Command::new(common::python())
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .args(&files)
            .output()
            .expect("run python");
        let report = common::text(&out);
        assert!(
            out.status.success(),
            "kubernetes-validate {version} (pip install -r tests/python/requirements.txt): {report}"
        );
        // Every object was validated against a schema, none skipped for want of one.
        assert!(!report.contains("Couldn't find schema"), "{report}");
        let passed = report.matches("passed for resource").count();
        let expected: usize = OVERLAYS.iter().map(|o| Rendered::of(o).objects.len()).sum();
        assert_eq!(passed, expected, "{report}");
    }
}

#[test]
fn gateway_configs_pass_check_config() {
    for overlay in OVERLAYS {
        let rendered = Rendered::of(overlay);
        let (mut toml, _) = rendered.gateway_toml();
        // Lay out the files the pod would see: each Secret volume at its mount path (here a
        // temporary directory), with what the README tells to put in that Secret.
        let dir = tempfile::tempdir().unwrap();
        let pod = &rendered.gateway()["spec"]["template"];
        let container = &containers(pod)[0];
        for mount in container["volumeMounts"].as_sequence().unwrap() {
            let volume = pod["spec"]["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            let Some(secret) = volume["secret"]["secretName"].as_str() else {
                continue;
            };
            let here = dir.path().join(secret);
            std::fs::create_dir_all(&here).unwrap();
            match secret {
                "barnabas-tls" => {
                    let ck = rcgen::generate_simple_self_signed(vec!["barnabas".into()]).unwrap();
                    std::fs::write(here.join("tls.crt"), ck.cert.pem()).unwrap();
                    std::fs::write(here.join("tls.key"), ck.key_pair.serialize_pem()).unwrap();
                }
                "barnabas-users" => {
                    common::write_test_users(&here);
                }
                other => panic!("{overlay}: Secret {other}: what goes in it?"),
            }
            let mount_path = str_at(mount, &["mountPath"]);
            toml = toml.replace(
                &format!("\"{mount_path}/"),
                &format!("\"{}/", here.display()),
            );
        }
        let path = dir.path().join("barnabas.toml");
        std::fs::write(&path, &toml).unwrap();
        let out = barnabas_bin()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{overlay}: barnabas check-config: {}",
            common::text(&out)
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("embedded broker"),
            "{overlay}: the gateway must use the Kafka StatefulSet"
        );
    }
}

#[test]
fn the_references_between_objects_hold() {
    for overlay in OVERLAYS {
        let r = Rendered::of(overlay);
        // Services select pods, and their target ports exist on those pods.
        for svc in r.all("Service") {
            let pods = r.pods_selected(&svc["spec"]["selector"]);
            assert!(
                !pods.is_empty(),
                "{overlay}: Service {} selects no pods",
                name(svc)
            );
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
                        "{overlay}: Service {}: {target:?} not on its pods",
                        name(svc)
                    );
                }
            }
        }
        // Workload selectors match their own templates.
        for w in r.workloads() {
            assert!(
                labels_match(
                    &w["spec"]["selector"]["matchLabels"],
                    &w["spec"]["template"]["metadata"]["labels"]
                ),
                "{overlay}: {} selector",
                name(w)
            );
        }
        // The gateway's config agrees with its pod and with Kafka.
        let kafka = r.kafka();
        let headless = r.get("Service", str_at(kafka, &["spec", "serviceName"]));
        assert_eq!(str_at(headless, &["spec", "clusterIP"]), "None");
        let replicas = kafka["spec"]["replicas"].as_u64().unwrap();
        let config = r.gateway_config();
        let pod = &r.gateway()["spec"]["template"];
        let container = &containers(pod)[0];
        let args: Vec<&str> = container["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let config_mount = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "config")
            .unwrap();
        assert!(
            args.windows(2).any(|w| w[0] == "--config"
                && w[1] == format!("{}/barnabas.toml", str_at(config_mount, &["mountPath"]))),
            "{overlay}: {args:?}"
        );
        let ports = ports(pod);
        for (name, listen) in [
            ("http", &config.http.listen),
            ("mqtt", &config.mqtt.listen),
            ("amqp", &config.amqp.listen),
            ("https", &config.http.tls_listen),
            ("mqtts", &config.mqtt.tls_listen),
            ("amqps", &config.amqp.tls_listen),
        ] {
            assert_eq!(
                ports.get(name).copied(),
                port_of(listen),
                "{overlay}: container port {name} vs config {listen}"
            );
        }
        for server in config.kafka.bootstrap_servers.split(',') {
            let host = server.split(':').next().unwrap();
            let (pod_name, service) = host.split_once('.').unwrap();
            assert_eq!(service, name(headless), "{overlay}: {server}");
            let ordinal: u64 = pod_name.strip_prefix("kafka-").unwrap().parse().unwrap();
            assert!(
                ordinal < replicas,
                "{overlay}: {server} is not a broker pod"
            );
        }
        let message_max: usize = env(&kafka["spec"]["template"], "KAFKA_MESSAGE_MAX_BYTES")
            .parse()
            .unwrap();
        assert!(message_max >= config.limits.max_message_bytes, "{overlay}");
        assert!(
            config.kafka.default_replication_factor as u64 <= replicas,
            "{overlay}: topics need more brokers than there are"
        );
        assert_eq!(
            str_at(container, &["readinessProbe", "httpGet", "path"]),
            "/ready"
        );
        assert_eq!(
            str_at(container, &["livenessProbe", "httpGet", "path"]),
            "/healthy"
        );
    }
}

#[test]
fn the_manifests_pass_the_production_lint() {
    for overlay in OVERLAYS {
        let r = Rendered::of(overlay);
        for w in r.workloads() {
            let what = format!("{overlay}: {} {}", kind(w), name(w));
            let pod = &w["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
            assert!(
                pod["securityContext"]["runAsUser"].as_u64().unwrap_or(0) > 0,
                "{what}: numeric non-root user"
            );
            assert!(
                pod["securityContext"]["fsGroup"].as_u64().is_some(),
                "{what}"
            );
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{what}"
            );
            assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
            for c in pod["containers"].as_sequence().unwrap() {
                let what = format!("{what} container {}", name_of(c));
                for probe in ["readinessProbe", "livenessProbe"] {
                    assert!(c[probe].is_mapping(), "{what}: {probe}");
                }
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
                assert!(
                    sc["capabilities"]["drop"]
                        .as_sequence()
                        .is_some_and(|d| d.iter().any(|c| c == "ALL")),
                    "{what}: capabilities drop ALL"
                );
                assert!(
                    c["volumeMounts"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|m| m["mountPath"] == "/tmp"),
                    "{what}: a writable /tmp beside the read-only root"
                );
                let image = str_at(c, &["image"]);
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
                assert!(
                    !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                    "{what}: image {image} needs a pinned tag"
                );
                assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{what}");
                assert!(c["resources"]["limits"]["memory"].is_string(), "{what}");
                assert!(c["resources"]["requests"]["cpu"].is_string(), "{what}");
            }
            // Exactly one PDB, with maxUnavailable.
            let pdbs: Vec<&Value> = r
                .all("PodDisruptionBudget")
                .filter(|p| {
                    labels_match(
                        &p["spec"]["selector"]["matchLabels"],
                        &w["spec"]["template"]["metadata"]["labels"],
                    )
                })
                .collect();
            assert_eq!(pdbs.len(), 1, "{what}: one PodDisruptionBudget");
            assert_eq!(pdbs[0]["spec"]["maxUnavailable"], 1, "{what}");
            assert!(pdbs[0]["spec"]["minAvailable"].is_null(), "{what}");
            // Ingress restricted by a NetworkPolicy.
            assert!(
                r.all("NetworkPolicy").any(|np| {
                    labels_match(
                        &np["spec"]["podSelector"]["matchLabels"],
                        &w["spec"]["template"]["metadata"]["labels"],
                    ) && np["spec"]["policyTypes"]
                        .as_sequence()
                        .is_some_and(|t| t.iter().any(|t| t == "Ingress"))
                }),
                "{what}: NetworkPolicy"
            );
            // Spread across nodes.
            let spread = pod["topologySpreadConstraints"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|t| t["topologyKey"] == "kubernetes.io/hostname");
            let anti = pod["affinity"]["podAntiAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|t| t["topologyKey"] == "kubernetes.io/hostname");
            assert!(spread || anti, "{what}: spread across nodes");
        }
        // Kafka's one broker per node is a hard rule.
        let kafka_pod = &r.kafka()["spec"]["template"]["spec"];
        assert!(
            kafka_pod["affinity"]["podAntiAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]
                .is_sequence(),
            "{overlay}: brokers on distinct nodes"
        );

        // Services: ClusterIP (or headless); a LoadBalancer/NodePort only in front of an
        // authenticating gateway.
        let config = r.gateway_config();
        for svc in r.all("Service") {
            let t = svc["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if t == "LoadBalancer" || t == "NodePort" {
                assert_eq!(
                    config.auth.mode,
                    "users",
                    "{overlay}: Service {} is {t} without authentication",
                    name(svc)
                );
            }
            assert_eq!(t, "ClusterIP", "{overlay}: Service {}", name(svc));
        }

        // Kafka's client port: only the gateway and the brokers.
        let kafka_np = r
            .all("NetworkPolicy")
            .find(|np| {
                labels_match(
                    &np["spec"]["podSelector"]["matchLabels"],
                    &r.kafka()["spec"]["template"]["metadata"]["labels"],
                )
            })
            .unwrap();
        let gateway_labels = &r.gateway()["spec"]["template"]["metadata"]["labels"];
        let kafka_labels = &r.kafka()["spec"]["template"]["metadata"]["labels"];
        for rule in kafka_np["spec"]["ingress"].as_sequence().unwrap() {
            let from = rule["from"]
                .as_sequence()
                .expect("every rule names its peers");
            assert!(!from.is_empty());
            for peer in from {
                assert!(
                    peer["namespaceSelector"].is_null() && peer["ipBlock"].is_null(),
                    "{overlay}: Kafka reachable from outside the namespace: {peer:?}"
                );
                let sel = &peer["podSelector"]["matchLabels"];
                assert!(
                    labels_match(sel, gateway_labels) || labels_match(sel, kafka_labels),
                    "{overlay}: Kafka reachable by other pods: {peer:?}"
                );
            }
        }
        // The gateway's Service ports are let through by its NetworkPolicy.
        let gw_np = r.get("NetworkPolicy", "barnabas");
        let svc = r.get("Service", "barnabas");
        let pod_ports = ports(&r.gateway()["spec"]["template"]);
        for p in svc["spec"]["ports"].as_sequence().unwrap() {
            let port = pod_ports[str_at(p, &["targetPort"])];
            assert!(
                gw_np["spec"]["ingress"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|rule| rule["ports"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|rp| rp["port"].as_u64() == Some(port))),
                "{overlay}: Service port {port} blocked by the NetworkPolicy"
            );
        }

        // No `replicas` on a Deployment an HPA scales (each apply would reset it).
        for hpa in r.all("HorizontalPodAutoscaler") {
            let target = r.get(
                str_at(hpa, &["spec", "scaleTargetRef", "kind"]),
                str_at(hpa, &["spec", "scaleTargetRef", "name"]),
            );
            assert!(
                target["spec"]["replicas"].is_null(),
                "{overlay}: replicas beside the HPA"
            );
            assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
            let down = &hpa["spec"]["behavior"]["scaleDown"];
            assert!(
                down["stabilizationWindowSeconds"].as_u64().unwrap() >= 600,
                "{overlay}: scale-down waits for long-lived connections"
            );
            assert!(down["policies"]
                .as_sequence()
                .is_some_and(|p| !p.is_empty()));
        }
    }
}

fn name_of(c: &Value) -> &str {
    c["name"].as_str().unwrap()
}

#[test]
fn production_authenticates_and_encrypts_dev_stays_small() {
    let prod = Rendered::of("production");
    let config = prod.gateway_config();
    assert_eq!(config.auth.mode, "users");
    assert!(!config.auth.allow_anonymous);
    assert!(!config.auth.users_file.is_empty());
    assert!(!config.tls.cert_file.is_empty() && !config.tls.key_file.is_empty());
    assert_eq!(config.mqtt.listen, "off", "plain MQTT off in production");
    assert_eq!(config.amqp.listen, "off", "plain AMQP off in production");
    assert_eq!(prod.kafka()["spec"]["replicas"], 3);
    assert_eq!(config.kafka.default_replication_factor, 3);
    let pod = &prod.gateway()["spec"]["template"]["spec"];
    let secrets: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert_eq!(secrets, ["barnabas-tls", "barnabas-users"]);
    let hpa = prod.get("HorizontalPodAutoscaler", "barnabas");
    assert_eq!(str_at(hpa, &["spec", "scaleTargetRef", "name"]), "barnabas");
    // The optional cert-manager Certificate fills the Secret the pod mounts.
    let cert = &parse_docs(&overlay_dir("production").join("cert-manager.yaml"))[0];
    assert_eq!(kind(cert), "Certificate");
    assert_eq!(str_at(cert, &["spec", "secretName"]), "barnabas-tls");
    assert_eq!(str_at(cert, &["spec", "privateKey", "encoding"]), "PKCS8");

    let dev = Rendered::of("dev");
    assert_eq!(dev.kafka()["spec"]["replicas"], 1);
    assert_eq!(
        env(
            &dev.kafka()["spec"]["template"],
            "KAFKA_CONTROLLER_QUORUM_VOTERS"
        ),
        "0@kafka-0.kafka-headless:9093"
    );
    assert_eq!(dev.gateway()["spec"]["replicas"], 1);
    assert_eq!(dev.all("HorizontalPodAutoscaler").count(), 0);
    let config = dev.gateway_config();
    assert!(config.tls.cert_file.is_empty());
    assert_eq!(config.kafka.default_replication_factor, 1);
}

#[test]
fn kafka_settings_are_the_safe_ones() {
    for overlay in OVERLAYS {
        let r = Rendered::of(overlay);
        let kafka = r.kafka();
        let tpl = &kafka["spec"]["template"];
        let replicas = kafka["spec"]["replicas"].as_u64().unwrap();
        // CLUSTER_ID: a base64url UUID, 22 characters, as kafka-storage.sh random-uuid.
        let id = env(tpl, "CLUSTER_ID");
        assert_eq!(id.len(), 22, "{overlay}: CLUSTER_ID {id}");
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&id)
            .unwrap_or_else(|e| panic!("{overlay}: CLUSTER_ID {id}: {e}"));
        assert_eq!(bytes.len(), 16, "{overlay}: CLUSTER_ID is 16 bytes");
        assert!(
            !id.starts_with('-'),
            "{overlay}: kafka-storage reads it as a flag"
        );
        // Kafka's log in a subdirectory of its volume (not the root with its lost+found).
        let data_mount = containers(tpl)[0]["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| {
                kafka["spec"]["volumeClaimTemplates"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|c| c["metadata"]["name"] == m["name"])
            })
            .expect("the data volume is mounted");
        let mount = str_at(data_mount, &["mountPath"]).trim_end_matches('/');
        for dir in env(tpl, "KAFKA_LOG_DIRS").split(',') {
            let sub = dir
                .strip_prefix(&format!("{mount}/"))
                .unwrap_or_else(|| panic!("{overlay}: log dir {dir} not under {mount}"));
            assert!(!sub.is_empty() && !sub.contains(".."), "{overlay}: {dir}");
        }
        // The apache/kafka image's user (1000) owns the volume.
        let sc = &tpl["spec"]["securityContext"];
        assert_eq!(sc["runAsUser"], 1000, "{overlay}");
        assert_eq!(sc["fsGroup"], 1000, "{overlay}");
        // Quorum voters and advertised names follow the pod ordinals.
        let voters = env(tpl, "KAFKA_CONTROLLER_QUORUM_VOTERS");
        assert_eq!(
            voters.split(',').count() as u64,
            replicas,
            "{overlay}: {voters}"
        );
        for i in 0..replicas {
            assert!(
                voters.contains(&format!("{i}@kafka-{i}.kafka-headless:")),
                "{voters}"
            );
        }
        let script = containers(tpl)[0]["command"]
            .as_sequence()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap();
        assert!(script.contains("KAFKA_NODE_ID=\"${POD_NAME##*-}\""));
        assert!(script.contains("${POD_NAME}.kafka-headless"));
        let rf: u64 = env(tpl, "KAFKA_DEFAULT_REPLICATION_FACTOR")
            .parse()
            .unwrap();
        let isr: u64 = env(tpl, "KAFKA_MIN_INSYNC_REPLICAS").parse().unwrap();
        assert_eq!(rf, replicas, "{overlay}");
        assert!(isr < rf || rf == 1, "{overlay}: one broker may be down");
        assert_eq!(env(tpl, "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"), "false");
        // A startup probe guards liveness during start-up; readiness is not a bare TCP check.
        let c = &containers(tpl)[0];
        assert!(c["startupProbe"].is_mapping(), "{overlay}: startupProbe");
        assert!(
            c["readinessProbe"]["exec"].is_mapping(),
            "{overlay}: readiness exec"
        );
    }
}

/// Runs the Kafka readiness probe's script with a stand-in kafka-topics.sh printing `output`
/// (exit `status`), as pod `kafka-1`; the probe's exit status.
fn kafka_probe(script: &str, output: &str, status: i32) -> i32 {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("bin")).unwrap();
    let tool = home.path().join("bin/kafka-topics.sh");
    std::fs::write(
        &tool,
        format!("#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {status}\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("sh")
        .args(["-c", script])
        .env("POD_NAME", "kafka-1")
        .env("KAFKA_HOME", home.path())
        .output()
        .unwrap();
    out.status.code().unwrap()
}

#[test]
fn kafka_readiness_fails_while_this_broker_is_out_of_sync() {
    let r = Rendered::of("production");
    let c = &containers(&r.kafka()["spec"]["template"])[0];
    let cmd = c["readinessProbe"]["exec"]["command"]
        .as_sequence()
        .unwrap();
    assert_eq!(cmd[0], "sh");
    let script = cmd[2].as_str().unwrap();
    assert!(script.contains("--bootstrap-server localhost:9092"));
    assert!(script.contains("--under-replicated-partitions"));
    let line = |replicas: &str, isr: &str| {
        format!("\tTopic: t\tPartition: 0\tLeader: 0\tReplicas: {replicas}\tIsr: {isr}\tElr: \tLastKnownElr: ")
    };
    // Nothing under-replicated: ready.
    assert_eq!(kafka_probe(script, "", 0), 0);
    // Under-replicated elsewhere (node 2 is behind), node 1 in sync: ready.
    assert_eq!(kafka_probe(script, &line("0,1,2", "0,1"), 0), 0);
    // Node 1 holds a replica out of the ISR: not ready (node 11 does not count as 1).
    assert_ne!(kafka_probe(script, &line("0,1,2", "0,2"), 0), 0);
    assert_ne!(
        kafka_probe(
            script,
            &format!("{}\n{}", line("0,2,11", "0,2"), line("1,2", "2")),
            0
        ),
        0
    );
    assert_eq!(kafka_probe(script, &line("0,2,11", "0,2"), 0), 0);
    // The local broker does not answer: not ready.
    assert_ne!(kafka_probe(script, "", 1), 0);
}

#[test]
fn the_advertised_address_is_a_url_for_ipv4_and_ipv6_pods() {
    for overlay in OVERLAYS {
        let r = Rendered::of(overlay);
        let pod = &r.gateway()["spec"]["template"];
        let c = &containers(pod)[0];
        let pod_ip = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "POD_IP")
            .unwrap();
        assert_eq!(
            str_at(pod_ip, &["valueFrom", "fieldRef", "fieldPath"]),
            "status.podIP"
        );
        let http = ports(pod)["http"];
        // Run the container's command with a stand-in barnabas that prints what it got.
        let bin = tempfile::tempdir().unwrap();
        let fake = bin.path().join("barnabas");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho \"$BARNABAS_HTTP__ADVERTISED_ADDRESS\"\necho \"$*\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let command: Vec<String> = c["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .chain(c["args"].as_sequence().unwrap())
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        for (ip, host) in [
            ("10.244.1.7", "10.244.1.7"),
            ("fd00:10:244::7", "[fd00:10:244::7]"),
        ] {
            let out = Command::new(&command[0])
                .args(&command[1..])
                .env("POD_IP", ip)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", common::text(&out));
            let stdout = String::from_utf8(out.stdout).unwrap();
            let mut lines = stdout.lines();
            let advertised = lines.next().unwrap();
            assert_eq!(advertised, format!("{host}:{http}"), "{overlay}");
            let url = reqwest::Url::parse(&format!("http://{advertised}"))
                .unwrap_or_else(|e| panic!("{overlay}: http://{advertised}: {e}"));
            assert_eq!(url.port(), Some(http as u16));
            let rest = lines.next().unwrap();
            assert!(rest.starts_with("run --config "), "{overlay}: {rest}");
        }
    }
}

#[test]
fn the_grace_period_covers_prestop_and_the_worst_case_drain() {
    // Gateway::shutdown (run.rs): in-flight work ≤ DRAIN_GRACE, HTTP consumer instances
    // closing ≤ CLOSE_TIMEOUT (each, in parallel), other consumers ≤ DRAIN_GRACE, producer
    // flush ≤ DRAIN_GRACE; then run() waits ≤ EXIT_WAIT for blocking work.
    let run_rs =
        std::fs::read_to_string(common::workspace_root().join("crates/barnabas/src/run.rs"))
            .unwrap();
    let shutdown = run_rs
        .split("pub async fn shutdown(mut self)")
        .nth(1)
        .unwrap()
        .split("\n    }\n")
        .next()
        .unwrap();
    assert_eq!(
        shutdown.matches("DRAIN_GRACE").count(),
        3,
        "the shutdown's waits changed: update this sum and the manifests' grace period"
    );
    assert!(shutdown.contains("close_consumers()"));
    assert!(run_rs.contains("shutdown_timeout(EXIT_WAIT)"));
    let state_rs =
        std::fs::read_to_string(common::workspace_root().join("crates/barnabas-http/src/state.rs"))
            .unwrap();
    let close_consumers = state_rs
        .split("pub async fn close_consumers(&self)")
        .nth(1)
        .unwrap();
    assert!(
        close_consumers.contains("close_all()"),
        "AppState::close_consumers closes every instance (each within CLOSE_TIMEOUT)"
    );
    let drain_grace = barnabas::run::DRAIN_GRACE.as_secs();
    let close = const_secs("crates/barnabas-kafka/src/consumer.rs", "CLOSE_TIMEOUT");
    let exit_wait = const_secs("crates/barnabas/src/run.rs", "EXIT_WAIT");
    let drain = 3 * drain_grace + close + exit_wait;
    assert_eq!(drain, 45, "README.md and base/barnabas.yaml explain 45 s");
    for overlay in OVERLAYS {
        let r = Rendered::of(overlay);
        let pod = &r.gateway()["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
            .as_sequence()
            .expect("preStop");
        assert_eq!(pre_stop[0], "/bin/sleep", "{overlay}");
        let sleep: u64 = pre_stop[1].as_str().unwrap().parse().unwrap();
        assert!(sleep >= 5, "{overlay}: endpoints need time to drop the pod");
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace >= sleep + drain,
            "{overlay}: grace {grace} s < preStop {sleep} s + drain {drain} s"
        );
    }
}

/// Bytes the gateway may hold at most for the configuration, by the arithmetic of
/// examples/kubernetes/README.md ("Memory").
fn memory_budget(config: &barnabas::config::Config) -> u64 {
    const MIB: u64 = 1 << 20;
    let base = 64 * MIB; // measured ~50 MiB RSS under load (docs/benchmarks.md)
    let per_connection = 16 * 1024; // measured 14.9 KiB per idle MQTT connection
    let produce_headroom = 64 * MIB; // records waiting for Kafka's acknowledgement
    let max_message = config.limits.max_message_bytes as u64;
    // A Kafka consumer: librdkafka's prefetch (queued.max.messages.kbytes = 4096, set by
    // barnabas-kafka), one fetch response beyond it, and the driver's read-ahead (HTTP:
    // max(8 MiB, 2 × max_message_bytes)).
    let per_consumer = 4 * MIB + max_message + (8 * MIB).max(2 * max_message);
    base + config.limits.max_connections as u64 * per_connection
        + produce_headroom
        + config.limits.max_consumers_per_principal as u64 * per_consumer
}

#[test]
fn the_memory_limit_covers_the_configured_buffers() {
    let consumer_rs = std::fs::read_to_string(
        common::workspace_root().join("crates/barnabas-kafka/src/consumer.rs"),
    )
    .unwrap();
    assert!(
        consumer_rs.contains("cfg.set(\"queued.max.messages.kbytes\", \"4096\")"),
        "the consumer prefetch changed: update memory_budget and the README"
    );
    for overlay in OVERLAYS {
        let r = Rendered::of(overlay);
        let config = r.gateway_config();
        assert!(
            config
                .kafka
                .properties
                .keys()
                .all(|k| !k.starts_with("queued.") && !k.starts_with("fetch.")),
            "{overlay}: consumer buffers overridden: update memory_budget"
        );
        let c = &containers(&r.gateway()["spec"]["template"])[0];
        let limit = quantity_bytes(str_at(c, &["resources", "limits", "memory"]));
        let budget = memory_budget(&config);
        assert!(
            limit >= budget,
            "{overlay}: memory limit {} MiB < {} MiB the config allows",
            limit >> 20,
            budget >> 20
        );
        assert!(config.http.consumer_buffer_records <= 1000, "{overlay}");
    }
}

#[test]
fn the_readmes_document_images_volume_and_cluster_needs() {
    let readme = std::fs::read_to_string(common::workspace_root().join("README.md")).unwrap();
    for needle in [
        "Dockerfile.demo",
        "/var/lib/barnabas",
        "--no-default-features",
    ] {
        assert!(readme.contains(needle), "README.md: {needle}");
    }
    let k8s = std::fs::read_to_string(examples().join("README.md")).unwrap();
    for needle in [
        "metrics-server",
        "kind load docker-image",
        "overlays/production",
        "overlays/dev",
        "barnabas hash-password",
        "kubectl create secret tls barnabas-tls",
        "rollout restart",
        "Not checked here",
        "Dockerfile.demo",
        "/var/lib/barnabas",
    ] {
        assert!(
            k8s.contains(needle),
            "examples/kubernetes/README.md: {needle}"
        );
    }
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
    // No tracked source file matches a `**/NAME` pattern (e.g. a vendored directory that
    // happens to be called `target`), where git can tell.
    let Ok(out) = Command::new("git")
        .args(["ls-files"])
        .current_dir(common::workspace_root())
        .output()
    else {
        return;
    };
    if !out.status.success() {
        return;
    }
    let names: Vec<&str> = patterns
        .iter()
        .filter_map(|p| p.strip_prefix("**/"))
        .filter(|n| !n.contains('*'))
        .collect();
    for file in String::from_utf8_lossy(&out.stdout).lines() {
        let needed = ["crates/", "vendor/", "tests/"]
            .iter()
            .any(|d| file.starts_with(d));
        if needed {
            assert!(
                !file.split('/').any(|part| names.contains(&part)),
                ".dockerignore leaves {file} out of the build context"
            );
        }
    }
}
