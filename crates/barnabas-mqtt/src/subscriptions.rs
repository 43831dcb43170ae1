//! A session's subscriptions: the Kafka consumers behind them, records in flight to the
//! client, and commits only for what the client acknowledged.
//!
//! - Plain subscriptions share one consumer (group `mqtt.{client_id}`) whose partitions the
//!   session assigns itself, so a SUBSCRIBE needs no group join: the partitions a new filter
//!   reads start at the high watermark taken before SUBACK (nothing published after SUBACK is
//!   missed); partitions that appear later start at their beginning. A persistent session
//!   commits those start offsets at once and then every acknowledged delivery, so after a
//!   reconnect it resumes at the first record the client did not acknowledge. A clean session
//!   never commits.
//! - Each `$share/{group}/…` group is a consumer in Kafka group `{group}`, subscribed through
//!   the group protocol, so members on any gateway split the partitions.
//! - Records are fetched only while the client's in-flight window has room, so a slow
//!   subscriber slows its own reading of Kafka and nothing else; Kafka is its queue.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    future::Future,
    num::{NonZeroU16, NonZeroU32},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use barnabas_core::{
    Access, CommitRequest, ConsumedRecord, Consumer, ConsumerConfig, ConsumerDriver, DriverLimits,
    Error, Fetched, OffsetReset, OffsetTracker, Principal, SeekTo, Sources, Subscription,
    TopicList, TopicPartition, TopicPartitionOffset,
};

use crate::{
    convert::Message,
    filter,
    outbound::Outbound,
    packet::{ConnectInfo, Publish, QoS, SubscribeRequest, SubscribeResult},
    store::Subscribed,
    MqttContext,
};

/// Unacknowledged QoS 1/2 deliveries per client at most (capped further by its Receive
/// Maximum): Kafka is the queue, so a deeper window would only hold records in memory.
pub const DELIVERY_WINDOW: u16 = 64;
/// Records taken from a consumer per fetch.
const FETCH_BATCH: usize = 64;
/// How long one fetch waits before it is renewed.
const FETCH_WAIT: Duration = Duration::from_secs(30);
/// Bound on Kafka round trips made while answering a SUBSCRIBE or closing.
const KAFKA_CALL: Duration = Duration::from_secs(10);
/// Retained deliveries waiting for room in the client's window, at most (as many as the
/// retained store holds topics); beyond it a SUBSCRIBE's retained messages are skipped.
const MAX_PENDING_RETAINED: usize = 100_000;

type FetchFuture = Pin<Box<dyn Future<Output = barnabas_core::Result<Fetched>> + Send>>;

/// Which consumer a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeedId {
    /// The session's own consumer (plain subscriptions).
    Plain,
    /// The consumer of a share group.
    Shared(String),
}

/// What to deliver next: a record from Kafka, or a retained message for a new subscription.
pub enum Next {
    /// A record of one of the session's consumers.
    Record(FeedId, ConsumedRecord),
    /// The retained message of this MQTT topic, at most at this QoS, with this v5
    /// subscription identifier.
    Retained(String, QoS, Option<NonZeroU32>),
}

struct Outstanding {
    /// Where the record came from; `None` for a retained message (nothing to commit).
    origin: Option<(FeedId, TopicPartition, i64)>,
}

struct Feed {
    driver: ConsumerDriver,
    session: Arc<dyn Consumer>,
    /// Plain feed: the partitions assigned and where to (re)start each (`None` = beginning).
    assigned: BTreeMap<TopicPartition, Option<i64>>,
    /// Shared feed: the topics subscribed.
    subscribed: BTreeSet<String>,
    tracker: OffsetTracker,
    commits: bool,
    fetch: Option<FetchFuture>,
    /// The background commit under way, if any (one at a time, so commits land in order).
    committing: Option<tokio::task::JoinHandle<()>>,
}

impl Feed {
    /// Reads as `principal` (its own Kafka login with identity passthrough).
    async fn open(
        ctx: &MqttContext,
        group: String,
        reset: OffsetReset,
        principal: &Principal,
    ) -> Result<Self, Error> {
        let session = ctx
            .consumers
            .create(ConsumerConfig {
                group_id: group,
                auto_offset_reset: reset,
                enable_auto_commit: false,
                explicit_offset_store: true,
                principal: Some(principal.clone()),
                ..ConsumerConfig::default()
            })
            .await?;
        let driver = ConsumerDriver::spawn(
            session.clone(),
            DriverLimits {
                max_records: 256,
                max_bytes: 4 * 1024 * 1024,
                poll_batch: 256,
            },
        );
        Ok(Self {
            driver,
            session,
            assigned: BTreeMap::new(),
            subscribed: BTreeSet::new(),
            tracker: OffsetTracker::default(),
            commits: true,
            fetch: None,
            committing: None,
        })
    }

    fn handed(&mut self, record: &ConsumedRecord) {
        let tp = TopicPartition::new(record.topic.clone(), record.partition);
        if let Some(start) = self.assigned.get_mut(&tp) {
            *start = Some(record.offset.saturating_add(1));
        }
        self.tracker.handed(record);
    }

    /// Reassigns the plain feed's partitions at their restart positions.
    async fn reassign(&mut self) -> Result<(), Error> {
        self.fetch = None;
        let partitions = self
            .assigned
            .iter()
            .map(|(tp, at)| {
                (
                    tp.clone(),
                    Some(at.map_or(SeekTo::Beginning, SeekTo::Offset)),
                )
            })
            .collect();
        bounded(self.driver.assign(partitions)).await
    }

    async fn close(self) {
        let _ = tokio::time::timeout(KAFKA_CALL, self.driver.close()).await;
    }
}

async fn bounded<T>(call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(KAFKA_CALL, call)
        .await
        .map_err(|_| Error::Timeout(KAFKA_CALL))?
}

/// How new partitions of a plain subscription get their start offsets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A SUBSCRIBE: from the high watermark now.
    Now,
    /// A restored session or a partition that appeared: the committed offset, else the
    /// beginning.
    Committed,
}

/// Where each of `added` starts: a SUBSCRIBE at the high watermark now (committed at once
/// for a persistent session, so a resume starts there too); a restored session or a new
/// partition at its committed offset, else (`None`) the beginning.
async fn start_offsets(
    ctx: &MqttContext,
    // `&mut`: a `Feed` holds a fetch future that is `Send` but not `Sync`, so only a unique
    // borrow of it may be held across an await in a `Send` future.
    feed: &mut Feed,
    added: &[TopicPartition],
    start: Start,
) -> Result<Vec<(TopicPartition, Option<i64>)>, Error> {
    match start {
        Start::Now => {
            let mut starts = Vec::with_capacity(added.len());
            for tp in added {
                let high = bounded(ctx.admin.watermarks(&tp.topic, tp.partition))
                    .await?
                    .high;
                starts.push((tp.clone(), Some(high)));
            }
            if feed.commits {
                let offsets = starts
                    .iter()
                    .filter_map(|(tp, at)| {
                        at.map(|offset| TopicPartitionOffset {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            offset,
                        })
                    })
                    .collect();
                bounded(feed.driver.commit(CommitRequest::Offsets(offsets))).await?;
            }
            Ok(starts)
        }
        Start::Committed if feed.commits => {
            let committed = bounded(feed.session.committed_offsets(added.to_vec())).await?;
            let known: HashMap<TopicPartition, Option<i64>> = committed.into_iter().collect();
            Ok(added
                .iter()
                .map(|tp| (tp.clone(), known.get(tp).copied().flatten()))
                .collect())
        }
        Start::Committed => Ok(added.iter().map(|tp| (tp.clone(), None)).collect()),
    }
}

/// A record some of a session's subscriptions take ([`Subscriptions::matched`]).
struct Matched {
    message: Message,
    /// The highest QoS a matching subscription was granted.
    granted: QoS,
    /// The retain flag as delivered.
    retain: bool,
    /// The matching subscriptions' v5 Subscription Identifiers.
    ids: Vec<NonZeroU32>,
}

/// A session's subscriptions and deliveries.
pub struct Subscriptions {
    ctx: Arc<MqttContext>,
    /// Whose subscriptions these are (topic ACLs).
    principal: Principal,
    client_id: String,
    persistent: bool,
    v5: bool,
    subs: Vec<(Subscribed, Sources)>,
    /// Boxed: most connections never subscribe, and an absent feed costs them 8 bytes
    /// instead of a whole `Feed` (issue 26, idle connections).
    plain: Option<Box<Feed>>,
    shared: BTreeMap<String, Feed>,
    queue: VecDeque<(FeedId, ConsumedRecord)>,
    /// Retained messages owed to new subscriptions (MQTT topic, QoS, subscription id): sent
    /// through the same window as records, and looked up when sent.
    retained: VecDeque<(String, QoS, Option<NonZeroU32>)>,
    outstanding: BTreeMap<NonZeroU16, Outstanding>,
    last_packet_id: u16,
    window: usize,
    /// The client's Maximum Packet Size and the topic aliases set towards it.
    outbound: Outbound,
}

impl Subscriptions {
    /// No subscriptions yet, for the client that sent `connect`: its principal reads, its
    /// Session Expiry says whether the subscriptions outlive the connection, its Receive
    /// Maximum (capped at [`DELIVERY_WINDOW`]) bounds unacknowledged QoS 1/2 deliveries, and
    /// its Maximum Packet Size and Topic Alias Maximum shape what is sent (v5).
    pub fn new(ctx: Arc<MqttContext>, connect: &ConnectInfo) -> Self {
        let principal = connect.principal.clone();
        let client_id = connect.client_id.as_str();
        let persistent = connect.session_expiry > 0;
        let v5 = connect.is_v5();
        let window = connect
            .receive_max
            .map_or(DELIVERY_WINDOW, |r| r.get().min(DELIVERY_WINDOW));
        let window = usize::from(window);
        let max_packet = connect.max_packet.and_then(|m| usize::try_from(m).ok());
        let topic_alias_max = connect.topic_alias_max;
        Self {
            ctx,
            principal,
            client_id: client_id.to_owned(),
            persistent,
            v5,
            subs: Vec::new(),
            plain: None,
            shared: BTreeMap::new(),
            queue: VecDeque::new(),
            retained: VecDeque::new(),
            outstanding: BTreeMap::new(),
            last_packet_id: 0,
            window: window.max(1),
            outbound: Outbound::new(v5, max_packet, topic_alias_max),
        }
    }

    /// The subscriptions, to keep with a persistent session.
    pub fn subscribed(&self) -> Vec<Subscribed> {
        self.subs.iter().map(|(s, _)| s.clone()).collect()
    }

    /// Whether this session keeps its state after it disconnects.
    pub fn set_persistent(&mut self, persistent: bool) {
        self.persistent = persistent;
    }

    /// Restores a persistent session's subscriptions after a reconnect. Each is checked
    /// again against the connecting principal's ACLs (they may have changed since), and the
    /// limits apply as to a SUBSCRIBE; what fails is dropped from the session.
    pub async fn restore(&mut self, subscriptions: Vec<Subscribed>) -> Result<(), Error> {
        let before = self.subs.len();
        for s in subscriptions {
            let sources = self.ctx.mapper.sources(&s.filter.levels());
            let refused = if self.denied(&s.filter, &sources) {
                Some(SubscribeResult::NotAuthorized)
            } else {
                self.over_limits(&s.filter, false)
            };
            if let Some(why) = refused {
                tracing::info!(principal = %self.principal.name, filter = %s.filter.filter, ?why, "stored subscription dropped");
                continue;
            }
            self.subs.push((s, sources));
        }
        self.count_subscriptions(before);
        let topics = self.ctx.catalog.refresh().await?;
        self.sync(&topics, Start::Committed).await
    }

    /// Adds or replaces subscriptions; returns one result per filter as sent. A filter the
    /// packet repeats is one subscription (its last options apply) with one result, copied
    /// to every repeat; each distinct filter counts against `limits.max_subscriptions`. The
    /// retained messages owed to the new subscriptions are queued for [`Self::next`].
    pub async fn subscribe(
        &mut self,
        requests: Vec<SubscribeRequest>,
        id: Option<NonZeroU32>,
    ) -> Vec<SubscribeResult> {
        // The last occurrence of each distinct filter is the one that counts.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(requests.len().min(1024));
        for (i, req) in requests.iter().enumerate() {
            last.insert(req.raw.as_str(), i);
        }
        let mut results = vec![SubscribeResult::Failed; requests.len()];
        let mut retained: BTreeMap<String, (QoS, Option<NonZeroU32>)> = BTreeMap::new();
        let before = self.subs.len();
        // Partitions the session reads already: a new filter must not get their records
        // from before its SUBACK.
        let reading: BTreeSet<TopicPartition> = self
            .plain
            .as_deref()
            .map(|f| f.assigned.keys().cloned().collect())
            .unwrap_or_default();
        for (i, req) in requests.iter().enumerate() {
            if last.get(req.raw.as_str()) == Some(&i) {
                results[i] = self.subscribe_one(req, id, &mut retained);
            }
        }
        for (i, req) in requests.iter().enumerate() {
            if let Some(&j) = last.get(req.raw.as_str()) {
                results[i] = results[j];
            }
        }
        let synced = match self.ctx.catalog.refresh().await {
            Ok(topics) => match self.sync(&topics, Start::Now).await {
                Ok(()) => self.start_new_filters(before, &reading).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            tracing::warn!(error = %e, "subscription could not be set up in Kafka");
            // Undo the new ones; refuse them.
            self.subs.truncate(before);
            for r in &mut results {
                if matches!(r, SubscribeResult::Granted(_)) {
                    *r = SubscribeResult::Failed;
                }
            }
            retained.clear();
        }
        self.count_subscriptions(before);
        self.owe_retained(retained);
        results
    }

    /// One distinct filter of a SUBSCRIBE; the retained messages it wants go into `retained`
    /// (one per MQTT topic, at the highest QoS asked).
    fn subscribe_one(
        &mut self,
        req: &SubscribeRequest,
        id: Option<NonZeroU32>,
        retained: &mut BTreeMap<String, (QoS, Option<NonZeroU32>)>,
    ) -> SubscribeResult {
        let Some(parsed) = filter::Filter::parse(&req.raw) else {
            return SubscribeResult::InvalidFilter;
        };
        let existed = self.subs.iter().position(|(s, _)| s.filter == parsed);
        if let Some(over) = self.over_limits(&parsed, existed.is_some()) {
            return over;
        }
        let sources = self.ctx.mapper.sources(&parsed.levels());
        if self.denied(&parsed, &sources) {
            tracing::info!(principal = %self.principal.name, filter = %req.raw, "subscription denied by ACL");
            return SubscribeResult::NotAuthorized;
        }
        let sub = Subscribed {
            filter: parsed,
            qos: req.qos,
            no_local: req.no_local,
            retain_as_published: req.retain_as_published,
            id,
            // A replaced subscription keeps where it started [MQTT-3.8.4-3].
            since: existed
                .and_then(|i| self.subs.get(i))
                .map(|(s, _)| s.since.clone())
                .unwrap_or_default(),
        };
        let send_retained = sub.filter.share.is_none()
            && match req.retain_handling {
                0 => true,
                1 => existed.is_none(),
                _ => false,
            };
        if send_retained {
            for m in self.ctx.retained.matching(&sub.filter.filter) {
                if m.remaining().is_none() || !self.may_read_retained(&m.topic) {
                    continue;
                }
                let q = req.qos.min(m.qos);
                let entry = retained.entry(m.topic).or_insert((q, id));
                entry.0 = entry.0.max(q);
            }
        }
        match existed {
            Some(i) => self.subs[i] = (sub, sources),
            None => self.subs.push((sub, sources)),
        }
        SubscribeResult::Granted(req.qos)
    }

    /// Gives the plain subscriptions added by this SUBSCRIBE (`self.subs[before..]`) their
    /// start in the partitions the session was `reading` already: the high watermark now,
    /// before the SUBACK. The session may still be behind in those partitions (a persistent
    /// session's queue, records fetched but not yet sent); what it reads there from before
    /// that offset goes to the older subscriptions only, never to the new one (3.8.4: a
    /// subscription gets what is published after it exists). Partitions added by this
    /// SUBSCRIBE start at that watermark anyway (`Start::Now`).
    async fn start_new_filters(
        &mut self,
        before: usize,
        reading: &BTreeSet<TopicPartition>,
    ) -> Result<(), Error> {
        let Some(feed) = self.plain.as_ref() else {
            return Ok(());
        };
        let Some(new) = self.subs.get(before..) else {
            return Ok(());
        };
        let overlap: Vec<TopicPartition> = reading
            .iter()
            .filter(|tp| feed.assigned.contains_key(*tp))
            .filter(|tp| {
                new.iter()
                    .any(|(s, src)| s.filter.share.is_none() && src.matches(&tp.topic))
            })
            .cloned()
            .collect();
        for tp in overlap {
            let high = bounded(self.ctx.admin.watermarks(&tp.topic, tp.partition))
                .await?
                .high;
            for (s, src) in self.subs.iter_mut().skip(before) {
                if s.filter.share.is_none()
                    && src.matches(&tp.topic)
                    && s.since.len() < crate::store::MAX_SINCE
                {
                    s.since.insert(tp.clone(), high);
                }
            }
        }
        Ok(())
    }

    /// Whether the principal may not read a topic the mapping names for `filter`, or may
    /// not use its share group. Topics matched by a template are left out of the
    /// subscription later if the principal may not read them.
    fn denied(&self, filter: &filter::Filter, sources: &Sources) -> bool {
        sources
            .exact_topics()
            .any(|t| !self.ctx.auth.allows(&self.principal, Access::Read(t)))
            || filter
                .share
                .as_deref()
                .is_some_and(|g| !self.ctx.auth.allows(&self.principal, Access::Group(g)))
    }

    /// Why a new filter is over this client's limits: `limits.max_subscriptions` filters,
    /// or `limits.max_consumers_per_connection` Kafka consumers (the plain subscriptions'
    /// one, one per share group). A filter the session has (`existed`) replaces itself.
    fn over_limits(&self, filter: &filter::Filter, existed: bool) -> Option<SubscribeResult> {
        if existed {
            return None;
        }
        if self.subs.len() >= self.ctx.settings.max_subscriptions {
            return Some(SubscribeResult::QuotaExceeded);
        }
        let has_consumer = self
            .subs
            .iter()
            .any(|(s, _)| s.filter.share == filter.share);
        if !has_consumer && self.consumers() >= self.ctx.settings.max_consumers_per_connection {
            return Some(SubscribeResult::QuotaExceeded);
        }
        None
    }

    /// Kafka consumers the subscriptions need: one for the plain ones, one per share group.
    fn consumers(&self) -> usize {
        let groups: BTreeSet<Option<&str>> = self
            .subs
            .iter()
            .map(|(s, _)| s.filter.share.as_deref())
            .collect();
        groups.len()
    }

    /// Whether the principal may read the Kafka topic a retained message's MQTT topic maps
    /// to: the same check a live delivery passed when its consumer was assigned the topic.
    fn may_read_retained(&self, topic: &str) -> bool {
        match self.ctx.mapper.resolve(topic) {
            Ok(Some(resolved)) => self.readable(&resolved.kafka_topic),
            _ => false,
        }
    }

    /// Queues retained deliveries, up to [`MAX_PENDING_RETAINED`] waiting at once.
    fn owe_retained(&mut self, retained: BTreeMap<String, (QoS, Option<NonZeroU32>)>) {
        for (topic, (qos, id)) in retained {
            if self.retained.len() >= MAX_PENDING_RETAINED {
                tracing::warn!("too many retained deliveries waiting; the rest are skipped");
                self.ctx.metrics.dropped_deliveries.inc();
                break;
            }
            self.retained.push_back((topic, qos, id));
        }
    }

    /// Moves the process-wide subscription gauge by how much this session's count changed.
    fn count_subscriptions(&self, before: usize) {
        let delta =
            i64::try_from(self.subs.len()).unwrap_or(0) - i64::try_from(before).unwrap_or(0);
        self.ctx.metrics.subscriptions.inc_by(delta);
    }

    /// Removes subscriptions; one flag per filter: whether it existed.
    pub async fn unsubscribe(&mut self, filters: &[String]) -> Vec<bool> {
        let mut existed = Vec::with_capacity(filters.len());
        let count_before = self.subs.len();
        for raw in filters {
            let parsed = filter::Filter::parse(raw);
            let before = self.subs.len();
            self.subs
                .retain(|(s, _)| Some(&s.filter) != parsed.as_ref());
            existed.push(self.subs.len() != before);
        }
        let topics = self.ctx.catalog.watch().borrow().clone();
        if let Err(e) = self.sync(&topics, Start::Committed).await {
            tracing::debug!(error = %e, "unsubscribe: consumers not updated");
        }
        self.count_subscriptions(count_before);
        existed
    }

    /// The cluster's topic list changed: pick up topics and partitions that appeared.
    pub async fn topics_changed(&mut self, topics: &TopicList) {
        if self.subs.is_empty() {
            return;
        }
        if let Err(e) = self.sync(topics, Start::Committed).await {
            tracing::debug!(error = %e, "new topics not picked up yet");
        }
    }

    fn readable(&self, topic: &str) -> bool {
        self.ctx.auth.allows(&self.principal, Access::Read(topic))
    }

    /// Brings the consumers in line with the subscriptions and the cluster's topics.
    async fn sync(&mut self, topics: &TopicList, start: Start) -> Result<(), Error> {
        self.sync_plain(topics, start).await?;
        self.sync_shared(topics).await
    }

    /// The plain (non-shared) subscriptions' consumer: assigned the readable partitions their
    /// filters match, opened with the first such partition, new partitions started per
    /// `start`.
    async fn sync_plain(&mut self, topics: &TopicList, start: Start) -> Result<(), Error> {
        let wanted = self.plain_partitions(topics);
        if self.plain.is_none() {
            if wanted.is_empty() {
                return Ok(());
            }
            let group = format!("mqtt.{}", self.client_id);
            let mut feed =
                Feed::open(&self.ctx, group, OffsetReset::Earliest, &self.principal).await?;
            feed.commits = self.persistent;
            self.plain = Some(Box::new(feed));
        }
        let Some(feed) = self.plain.as_deref_mut() else {
            return Ok(());
        };
        let current: BTreeSet<TopicPartition> = feed.assigned.keys().cloned().collect();
        let added: Vec<TopicPartition> = wanted.difference(&current).cloned().collect();
        let removed: Vec<TopicPartition> = current.difference(&wanted).cloned().collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let starts = start_offsets(&self.ctx, feed, &added, start).await?;
        for tp in &removed {
            feed.assigned.remove(tp);
            feed.tracker.forget(tp);
        }
        // Records already read from a partition no longer wanted are not delivered.
        self.queue.retain(|(f, r)| {
            *f != FeedId::Plain
                || !removed
                    .iter()
                    .any(|tp| tp.topic == r.topic && tp.partition == r.partition)
        });
        for (tp, at) in starts {
            if let Some(offset) = at {
                feed.tracker.start_at(tp.clone(), offset);
            }
            feed.assigned.insert(tp, at);
        }
        feed.reassign().await
    }

    /// Every partition of `topics` a plain subscription's filter matches and the principal
    /// may read.
    fn plain_partitions(&self, topics: &TopicList) -> BTreeSet<TopicPartition> {
        let mut sources = Sources::default();
        for (s, src) in &self.subs {
            if s.filter.share.is_none() {
                sources.extend(src);
            }
        }
        topics
            .iter()
            .filter(|(t, _)| sources.matches(t) && self.readable(t))
            .flat_map(|(t, n)| (0..*n).map(move |p| TopicPartition::new(t.clone(), p)))
            .collect()
    }

    async fn sync_shared(&mut self, topics: &TopicList) -> Result<(), Error> {
        let mut groups: BTreeMap<String, Sources> = BTreeMap::new();
        for (s, src) in &self.subs {
            if let Some(g) = &s.filter.share {
                groups.entry(g.clone()).or_default().extend(src);
            }
        }
        let gone: Vec<String> = self
            .shared
            .keys()
            .filter(|g| !groups.contains_key(*g))
            .cloned()
            .collect();
        for g in gone {
            if let Some(mut feed) = self.shared.remove(&g) {
                self.queue.retain(|(f, _)| *f != FeedId::Shared(g.clone()));
                commit_now(&mut feed).await;
                feed.close().await;
            }
        }
        for (group, sources) in groups {
            let wanted: BTreeSet<String> = topics
                .keys()
                .filter(|t| sources.matches(t) && self.readable(t))
                .cloned()
                .collect();
            if !self.shared.contains_key(&group) {
                let feed = Feed::open(
                    &self.ctx,
                    group.clone(),
                    OffsetReset::Latest,
                    &self.principal,
                )
                .await?;
                self.shared.insert(group.clone(), feed);
            }
            let Some(feed) = self.shared.get_mut(&group) else {
                continue;
            };
            if feed.subscribed == wanted {
                continue;
            }
            feed.fetch = None;
            if wanted.is_empty() {
                bounded(feed.driver.unsubscribe()).await?;
            } else {
                bounded(
                    feed.driver
                        .subscribe(Subscription::Topics(wanted.iter().cloned().collect())),
                )
                .await?;
            }
            feed.subscribed = wanted;
        }
        Ok(())
    }

    /// Room for another unacknowledged delivery, and something that may deliver. A full
    /// window (or, defensively, no free packet id) stops reading deliveries until the client
    /// acknowledges: nothing spins while a client withholds its acks.
    pub fn has_room(&self) -> bool {
        self.outstanding.len() < self.window
            && self.outstanding.len() < usize::from(u16::MAX)
            && (self.plain.is_some() || !self.shared.is_empty() || !self.retained.is_empty())
    }

    /// Deliveries in hand: records fetched and not yet sent, retained messages owed, or
    /// deliveries the client has not acknowledged.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty() || !self.retained.is_empty() || !self.outstanding.is_empty()
    }

    /// Resolves once a delivery is in hand — a retained message owed to a new subscription,
    /// or records fetched (queued as they come, so this is cancel-safe) — or with the error
    /// that ends reading for good: Kafka refused this client's reads (its login, under
    /// identity passthrough, or an ACL). Other failures are retried. [`Self::take`] then
    /// gives the delivery: the session's loop waits on this without holding a record.
    pub async fn ready(&mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !self.retained.is_empty() || !self.queue.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let feeds = self
            .plain
            .as_deref_mut()
            .map(|f| (FeedId::Plain, f))
            .into_iter()
            .chain(
                self.shared
                    .iter_mut()
                    .map(|(g, f)| (FeedId::Shared(g.clone()), f)),
            );
        for (id, feed) in feeds {
            let fetch = feed.fetch.get_or_insert_with(|| {
                let driver = feed.driver.clone();
                Box::pin(async move { driver.fetch(FETCH_BATCH, None, FETCH_WAIT).await })
            });
            if let Poll::Ready(result) = fetch.as_mut().poll(cx) {
                feed.fetch = None;
                match result {
                    Ok(Fetched::Records(records)) => {
                        for r in records {
                            feed.handed(&r);
                            self.queue.push_back((id.clone(), r));
                        }
                    }
                    Ok(Fetched::TooLarge { .. }) => {}
                    Err(e) if e.kind() == barnabas_core::ErrorKind::Unauthorized => {
                        return Poll::Ready(Err(e));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "subscription consumer failed; retrying");
                        feed.fetch = Some(Box::pin(async {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            Ok(Fetched::Records(Vec::new()))
                        }));
                    }
                }
                cx.waker().wake_by_ref();
            }
        }
        if self.queue.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// The delivery [`Self::ready`] found, retained messages first.
    pub fn take(&mut self) -> Option<Next> {
        if let Some((topic, qos, id)) = self.retained.pop_front() {
            return Some(Next::Retained(topic, qos, id));
        }
        let (feed, record) = self.queue.pop_front()?;
        Some(Next::Record(feed, record))
    }

    /// The PUBLISH for a record, or `None` when no subscription wants it (it is then
    /// finished at once).
    pub fn deliver(&mut self, feed_id: FeedId, record: ConsumedRecord) -> Option<Publish> {
        let tp = TopicPartition::new(record.topic.clone(), record.partition);
        let offset = record.offset;
        if feed_id == FeedId::Plain {
            self.passed(&tp, offset);
        }
        let message =
            Message::from_record(&record, &self.ctx.mapper, self.ctx.settings.kafka_metadata);
        let share = match &feed_id {
            FeedId::Plain => None,
            FeedId::Shared(g) => Some(g.as_str()),
        };
        let matched = message.and_then(|m| self.matched(m, share, &tp, offset));
        let Some(Matched {
            message,
            granted,
            retain,
            ids,
        }) = matched
        else {
            self.finish(&feed_id, &tp, offset);
            return None;
        };
        let qos = granted.min(message.qos);
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            let Some(id) = self.packet_id() else {
                // Unreachable while `has_room` holds; never lose the record if it does not.
                self.queue.push_front((feed_id, record));
                return None;
            };
            Some(id)
        };
        // A packet too large for the client is not sent; its packet id stays free.
        let Some(publish) = self
            .outbound
            .shape(message.to_publish(qos, packet_id, retain, ids, self.v5))
        else {
            self.too_large(&message.topic);
            self.finish(&feed_id, &tp, offset);
            return None;
        };
        self.count_delivery(qos);
        match packet_id {
            None => self.finish(&feed_id, &tp, offset),
            Some(id) => {
                self.outstanding.insert(
                    id,
                    Outstanding {
                        origin: Some((feed_id, tp, offset)),
                    },
                );
            }
        }
        Some(publish)
    }

    /// How the subscriptions of one feed (`share`: a shared group's, or the plain ones) take
    /// `m`, read at `offset` of `tp`: at the highest QoS any matching one was granted, the
    /// retain flag kept if any asked for Retain As Published, with every matching one's v5
    /// Subscription Identifier; `None` when none matches (No Local, a start after `offset`,
    /// the filter) or the message expired.
    fn matched(
        &self,
        m: Message,
        share: Option<&str>,
        tp: &TopicPartition,
        offset: i64,
    ) -> Option<Matched> {
        let own = m.origin_client.as_deref() == Some(self.client_id.as_str());
        let matching: Vec<&Subscribed> = self
            .subs
            .iter()
            .map(|(s, _)| s)
            .filter(|s| {
                s.filter.share.as_deref() == share
                    && !(s.no_local && own)
                    && s.since.get(tp).is_none_or(|start| offset >= *start)
                    && filter::matches(&s.filter.filter, &m.topic)
            })
            .collect();
        let granted = matching.iter().map(|s| s.qos).max()?;
        if m.remaining().is_none() {
            // Expired: not delivered [MQTT-3.3.2-5].
            tracing::debug!(topic = %m.topic, "delivery expired; dropped");
            self.ctx.metrics.dropped_deliveries.inc();
            return None;
        }
        let retain = m.retain && matching.iter().any(|s| s.retain_as_published);
        let ids = matching.iter().filter_map(|s| s.id).collect();
        Some(Matched {
            message: m,
            granted,
            retain,
            ids,
        })
    }

    /// The plain feed reads `offset` of `tp`: subscriptions whose start there is behind it
    /// no longer need to remember it.
    fn passed(&mut self, tp: &TopicPartition, offset: i64) {
        for (s, _) in &mut self.subs {
            if s.since.get(tp).is_some_and(|start| offset >= *start) {
                s.since.remove(tp);
            }
        }
    }

    /// A delivery above the client's Maximum Packet Size: not sent [MQTT-3.1.2-24], and
    /// finished as if it had been [MQTT-3.1.2-25], so it holds up nothing behind it.
    fn too_large(&self, topic: &str) {
        tracing::debug!(
            topic,
            "delivery above the client's maximum packet size; dropped"
        );
        self.ctx.metrics.dropped_deliveries.inc();
    }

    /// The PUBLISH of a retained message owed to a new subscription: the topic's retained
    /// message now (`None` if it was cleared or expired meanwhile).
    pub fn deliver_retained(
        &mut self,
        topic: &str,
        qos: QoS,
        id: Option<NonZeroU32>,
    ) -> Option<Publish> {
        let message = self.ctx.retained.get(topic)?;
        // Expired meanwhile: nothing to send.
        message.remaining()?;
        let qos = qos.min(message.qos);
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            let Some(pid) = self.packet_id() else {
                // Unreachable while `has_room` holds; try again when the window opens.
                self.retained.push_front((topic.to_owned(), qos, id));
                return None;
            };
            Some(pid)
        };
        let Some(publish) = self.outbound.shape(message.to_publish(
            qos,
            packet_id,
            true,
            id.into_iter().collect(),
            self.v5,
        )) else {
            self.too_large(topic);
            return None;
        };
        if let Some(pid) = packet_id {
            self.outstanding.insert(pid, Outstanding { origin: None });
        }
        self.count_delivery(qos);
        Some(publish)
    }

    fn count_delivery(&self, qos: QoS) {
        self.ctx
            .metrics
            .deliveries
            .get_or_create(&crate::QosLabel { qos: qos as u8 })
            .inc();
        self.ctx.records_delivered.inc();
    }

    /// A packet id no delivery in flight uses; `None` when all 65 535 are (bounded search:
    /// the window keeps far fewer in flight, so the first few candidates are free).
    fn packet_id(&mut self) -> Option<NonZeroU16> {
        for _ in 0..=u16::MAX {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            if let Some(id) = NonZeroU16::new(self.last_packet_id) {
                if !self.outstanding.contains_key(&id) {
                    return Some(id);
                }
            }
        }
        None
    }

    fn finish(&mut self, feed_id: &FeedId, tp: &TopicPartition, offset: i64) {
        let feed = match feed_id {
            FeedId::Plain => self.plain.as_deref_mut(),
            FeedId::Shared(g) => self.shared.get_mut(g),
        };
        if let Some(feed) = feed {
            feed.tracker.finished(tp, offset);
        }
    }

    /// PUBACK from the client: the delivery is done.
    pub fn puback(&mut self, id: NonZeroU16) {
        if let Some(Outstanding {
            origin: Some((feed, tp, offset)),
        }) = self.outstanding.remove(&id)
        {
            self.finish(&feed, &tp, offset);
        }
    }

    /// PUBREC from the client: the client owns the message now (its offset may be
    /// committed); the packet id stays in use until PUBCOMP. Returns whether it was known.
    pub fn pubrec(&mut self, id: NonZeroU16) -> bool {
        match self.outstanding.get_mut(&id) {
            Some(o) => {
                if let Some((feed, tp, offset)) = o.origin.take() {
                    self.finish(&feed, &tp, offset);
                }
                true
            }
            None => false,
        }
    }

    /// PUBCOMP from the client: the packet id is free again.
    pub fn pubcomp(&mut self, id: NonZeroU16) {
        self.outstanding.remove(&id);
    }

    /// Whether acknowledged deliveries wait to be committed.
    pub fn wants_commit(&self) -> bool {
        self.plain
            .as_deref()
            .into_iter()
            .chain(self.shared.values())
            .any(|f| f.commits && f.tracker.is_dirty())
    }

    /// Commits what the client acknowledged, in the background.
    pub fn commit(&mut self) {
        for feed in self
            .plain
            .as_deref_mut()
            .into_iter()
            .chain(self.shared.values_mut())
        {
            if !feed.commits
                || !feed.tracker.is_dirty()
                || feed.committing.as_ref().is_some_and(|c| !c.is_finished())
            {
                continue;
            }
            let offsets = feed.tracker.committable();
            if offsets.is_empty() {
                continue;
            }
            let driver = feed.driver.clone();
            feed.committing = Some(tokio::spawn(async move {
                if let Err(e) = bounded(driver.commit(CommitRequest::Offsets(offsets))).await {
                    tracing::debug!(error = %e, "committing acknowledged deliveries failed");
                }
            }));
        }
    }

    /// Commits what was acknowledged and closes the consumers, once, when the session ends;
    /// the subscriptions stay listed ([`Self::subscribed`]) for the session to keep.
    pub async fn close(&mut self) {
        if let Some(mut feed) = self.plain.take() {
            commit_now(&mut feed).await;
            feed.close().await;
        }
        for (_, mut feed) in std::mem::take(&mut self.shared) {
            commit_now(&mut feed).await;
            feed.close().await;
        }
        let live = i64::try_from(self.subs.len()).unwrap_or(0);
        self.ctx.metrics.subscriptions.dec_by(live);
    }
}

async fn commit_now(feed: &mut Feed) {
    if let Some(under_way) = feed.committing.take() {
        let _ = under_way.await;
    }
    if !feed.commits {
        return;
    }
    let offsets = feed.tracker.committable();
    if !offsets.is_empty() {
        if let Err(e) = bounded(feed.driver.commit(CommitRequest::Offsets(offsets))).await {
            tracing::debug!(error = %e, "final commit failed; unacknowledged records will be redelivered");
        }
    }
}
