//! The Kubernetes manifests in examples/kubernetes, checked without a cluster: every YAML
//! document parses, and the references between objects hold (selectors match pod labels,
//! Service target ports exist on the pods, the StatefulSet's Service is headless, the
//! ConfigMap's barnabas.toml is a valid barnabas config whose listeners and bootstrap servers
//! agree with the ports and broker names, probes hit /ready and /healthy, the HPA targets the
//! Deployment, replicas advertise their pod IP to each other, and Kafka's settings are the
//! safe ones).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;

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
