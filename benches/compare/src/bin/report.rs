//! Turns scripts/bench.sh's results file into markdown tables (medians over rounds, ratios to
//! the peers) and checks issue 5's goals against them.
//!
//! A ratio goal (webchan against a peer) is judged on the ratios round by round: the two runs
//! of one round are seconds apart, so a machine whose speed drifts shows as spread, not bias.
//! With at least `MIN_PAIRED` rounds, the verdict is the median of those ratios with a
//! distribution-free 95 % confidence interval (order statistics of the binomial law, no
//! assumption about the noise): "yes" when the whole interval is at or above the goal, "no"
//! when it is all below, "within noise" when it straddles it (then more rounds, or a quieter
//! machine, decide). With fewer rounds the verdict is the ratio of the medians, as a first
//! look. An absolute goal (a rate, a CPU time per message) is judged the same way on the
//! server's own figure round by round: on a shared host whose speed moves between phases, one
//! median can land on either side of the line while the interval shows that it straddles it.
//!
//! ```text
//! report RESULTS.tsv
//! report --ab AB.tsv
//! report --vs PEER ROUNDS.tsv
//! ```
//!
//! Each line of the file: `round<TAB>scenario<TAB>server<TAB>exit status<TAB>key=value ...`
//! (the load client's last line). Exits 1 when any run failed.
//!
//! `--ab` reads scripts/ab.sh's file instead (`round<TAB>runner<TAB>rate`, runners `new`,
//! `old`, `peer`) and prints the median rate of each runner and the paired ratios new/old,
//! new/peer and old/peer with the same interval. `--vs PEER` reads the same kind of file with
//! any runners (benches/compare/experiments/bound.sh's) and prints each runner's median rate
//! and its paired ratio to PEER.

use std::collections::{BTreeMap, HashMap};

struct Run {
    round: String,
    ok: bool,
    fields: HashMap<String, String>,
}

/// (id, title, kind) in table order; kind: "ws", "stream", "file", "idle" or "idlehttp".
const SCENARIOS: &[(&str, &str, &str)] = &[
    ("echo16", "WS echo 16 B, 64 conns × 8 in flight", "ws"),
    ("pingpong", "WS ping-pong 16 B, 1 conn, client + server on one core", "ws"),
    ("echo16k", "WS echo 16 KiB, 16 conns × 1 in flight", "ws"),
    ("echo16ktext", "WS echo 16 KiB text, 16 conns × 1 in flight", "ws"),
    ("echo1m", "WS echo 1 MiB, 4 conns × 1 in flight", "ws"),
    ("stream1k", "HTTP stream, 16 conns × 1 KiB chunks", "stream"),
    ("stream64k", "HTTP stream, 16 conns × 64 KiB chunks", "stream"),
    ("file", "file, 16 conns, chunked", "file"),
    ("filelen", "file, 16 conns, Content-Length declared", "file"),
    ("idle", "idle WS connections: server RSS per connection", "idle"),
    ("idlehttp", "idle HTTP streams: server RSS per stream", "idlehttp"),
];

const WS_SERVERS: &[&str] =
    &["webchan", "tungstenite", "tungstenite-batched", "axum", "fastwebsockets", "uws"];
const STREAM_SERVERS: &[&str] = &["webchan-stream", "hyper-stream"];
const FILE_SERVERS: &[&str] = &["webchan-file", "hyper-file"];
const IDLE_HTTP_SERVERS: &[&str] = &["webchan-idle", "hyper-idle"];

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

/// Rounds from which a ratio goal is judged on its paired ratios (with 6, the interval is
/// their range: 97 % coverage).
const MIN_PAIRED: usize = 6;

/// The median of `values` and a confidence interval for it of at least 95 % coverage,
/// whatever the distribution: the order statistics `k` and `n + 1 - k`, with `k` the largest
/// rank such that a Binomial(n, 1/2) falls below `k` with probability at most 2.5 %. None
/// with fewer than [`MIN_PAIRED`] values.
fn median_interval(values: &[f64]) -> Option<(f64, f64, f64)> {
    let n = values.len();
    if n < MIN_PAIRED {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // P(B <= j) for B ~ Binomial(n, 1/2), accumulated term by term.
    let mut term = 0.5f64.powi(n as i32);
    let mut below = 0.0;
    let mut k = 0;
    for j in 0..n {
        below += term;
        if below > 0.025 {
            break;
        }
        k = j + 1;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    let k = k.max(1);
    Some((median(sorted.clone())?, sorted[k - 1], sorted[n - k]))
}

/// What a run says of a goal.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Verdict {
    Yes,
    No,
    /// The confidence interval straddles the goal.
    WithinNoise,
    /// Not measured in this run.
    Unknown,
}

impl From<bool> for Verdict {
    fn from(met: bool) -> Self {
        if met {
            Verdict::Yes
        } else {
            Verdict::No
        }
    }
}

impl Verdict {
    /// The verdict on "≥ `bound`" (`at_least`) or "≤ `bound`" of a figure whose confidence
    /// interval is `lo`-`hi`.
    fn of_interval(lo: f64, hi: f64, bound: f64, at_least: bool) -> Self {
        let (all_met, none_met) =
            if at_least { (lo >= bound, hi < bound) } else { (hi <= bound, lo > bound) };
        if all_met {
            Verdict::Yes
        } else if none_met {
            Verdict::No
        } else {
            Verdict::WithinNoise
        }
    }
}

/// A goal's figures and its verdict.
type Judged = (String, Verdict);

/// The goals of issue 5 this run measured, in the order they are printed.
#[derive(Default)]
struct Goals(Vec<Judged>);

impl Goals {
    /// A goal judged on one figure (`None`: not measured).
    fn add(&mut self, name: String, met: Option<bool>) {
        self.0.push((name, met.map_or(Verdict::Unknown, Verdict::from)));
    }

    /// The goal "`a`'s `key` ≥ `factor` × `b`'s" (see [`Cells::ratio_goal`]).
    #[allow(clippy::too_many_arguments)]
    fn ratio(
        &mut self,
        cells: &Cells<'_>,
        label: &str,
        scenario: &str,
        a: &str,
        b: &str,
        key: &str,
        factor: f64,
    ) {
        let (shown, verdict) = cells.ratio_goal(scenario, a, b, key, factor);
        self.0.push((format!("{label} ({shown})"), verdict));
    }
}

struct Cells<'a> {
    runs: &'a BTreeMap<(String, String), Vec<Run>>,
}

impl Cells<'_> {
    fn runs(&self, scenario: &str, server: &str) -> &[Run] {
        self.runs.get(&(scenario.to_owned(), server.to_owned())).map_or(&[], |v| v.as_slice())
    }
    /// Median of a field over the successful runs.
    fn get(&self, scenario: &str, server: &str, key: &str) -> Option<f64> {
        median(
            self.runs(scenario, server)
                .iter()
                .filter(|r| r.ok)
                .filter_map(|r| r.fields.get(key)?.parse().ok())
                .collect(),
        )
    }
    /// `a`'s field over `b`'s, round by round (rounds where both runs succeeded): the two ran
    /// a few seconds apart, so a machine whose speed drifts over minutes moves both alike.
    fn per_round(&self, scenario: &str, a: &str, b: &str, key: &str) -> Vec<f64> {
        let value = |run: &Run| run.fields.get(key)?.parse::<f64>().ok().filter(|_| run.ok);
        self.runs(scenario, a)
            .iter()
            .filter_map(|ra| {
                let va = value(ra)?;
                let rb = self.runs(scenario, b).iter().find(|rb| rb.round == ra.round)?;
                Some(va / value(rb).filter(|v| *v > 0.0)?)
            })
            .collect()
    }
    /// The goal "`a`'s field ≥ `factor` × `b`'s": the figures that judge it and the verdict
    /// (see the module's documentation).
    fn ratio_goal(&self, scenario: &str, a: &str, b: &str, key: &str, factor: f64) -> Judged {
        let of_medians = match (self.get(scenario, a, key), self.get(scenario, b, key)) {
            (Some(va), Some(vb)) if vb > 0.0 => Some(va / vb),
            _ => None,
        };
        let mut shown = of_medians.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
        let ratios = self.per_round(scenario, a, b, key);
        if let Some((median, lo, hi)) = median_interval(&ratios) {
            shown += &format!(
                "; paired, {} rounds: median {median:.2}×, 95 % CI {lo:.2}-{hi:.2}",
                ratios.len()
            );
            return (shown, Verdict::of_interval(lo, hi, factor, true));
        }
        if ratios.len() >= 2 {
            let list: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            shown += &format!("; per round {}", list.join(", "));
        }
        (shown, of_medians.map_or(Verdict::Unknown, |r| Verdict::from(r >= factor)))
    }
    /// The goal "`server`'s field ≥ `bound`" (`at_least`) or "≤ `bound`": its median over the
    /// rounds, `show`n with its `unit`, and the verdict, from the interval once there are
    /// enough rounds.
    #[allow(clippy::too_many_arguments)]
    fn absolute_goal(
        &self,
        scenario: &str,
        server: &str,
        key: &str,
        bound: f64,
        at_least: bool,
        show: &dyn Fn(f64) -> String,
        unit: &str,
    ) -> Judged {
        let values: Vec<f64> = self
            .runs(scenario, server)
            .iter()
            .filter(|r| r.ok)
            .filter_map(|r| r.fields.get(key)?.parse().ok())
            .collect();
        let Some(median) = median(values.clone()) else {
            return ("—".to_owned(), Verdict::Unknown);
        };
        let mut shown = format!("{}{unit}", show(median));
        if let Some((_, lo, hi)) = median_interval(&values) {
            shown += &format!("; {} rounds: 95 % CI {}-{}{unit}", values.len(), show(lo), show(hi));
            return (shown, Verdict::of_interval(lo, hi, bound, at_least));
        }
        let met = if at_least { median >= bound } else { median <= bound };
        (shown, Verdict::from(met))
    }
    fn failures(&self, scenario: &str, server: &str) -> usize {
        self.runs(scenario, server).iter().filter(|r| !r.ok).count()
    }
    /// A field as the load client wrote it, from the first run of a scenario that has it.
    fn first(&self, scenario: &str, key: &str) -> Option<String> {
        self.runs
            .iter()
            .filter(|((s, _), _)| s == scenario)
            .flat_map(|(_, runs)| runs.iter())
            .find_map(|r| r.fields.get(key).cloned())
    }
}

fn fails_mark(n: usize) -> String {
    if n > 0 {
        format!(" FAIL({n})")
    } else {
        String::new()
    }
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

/// Rounds of runners (`round<TAB>runner<TAB>rate`), and the runners in order of appearance.
type Rounds<'a> = (Vec<&'a str>, BTreeMap<&'a str, HashMap<&'a str, f64>>);

fn parse_rounds(text: &str) -> Rounds<'_> {
    let mut order = Vec::new();
    let mut rounds: BTreeMap<&str, HashMap<&str, f64>> = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [round, runner, rate] = cols[..] {
            if let Ok(rate) = rate.trim().parse() {
                rounds.entry(round).or_default().insert(runner, rate);
                if !order.contains(&runner) {
                    order.push(runner);
                }
            }
        }
    }
    (order, rounds)
}

/// The median rate of each runner, then each pair's ratios round by round: their median and
/// interval.
fn paired(rounds: &Rounds<'_>, runners: &[&str], pairs: &[(&str, &str)]) -> String {
    let rounds = &rounds.1;
    let mut out = String::new();
    for runner in runners {
        let rates: Vec<f64> = rounds.values().filter_map(|r| r.get(runner).copied()).collect();
        if let Some(m) = median(rates.clone()) {
            out += &format!("{runner}: median {} msg/s over {} rounds\n", rate(m), rates.len());
        }
    }
    for (a, b) in pairs {
        let ratios: Vec<f64> =
            rounds.values().filter_map(|r| Some(r.get(a)? / r.get(b)?)).collect();
        let Some(m) = median(ratios.clone()) else { continue };
        let interval = match median_interval(&ratios) {
            Some((_, lo, hi)) => format!("95 % CI {lo:.3}-{hi:.3}"),
            None => format!("no interval under {MIN_PAIRED} rounds"),
        };
        out += &format!("{a}/{b}: median {m:.3}, {interval} ({} rounds)\n", ratios.len());
    }
    out
}

/// `--ab`: scripts/ab.sh's rounds (runners `new`, `old`, `peer`) as medians and paired ratios.
fn ab(text: &str) -> String {
    let pairs = [("new", "old"), ("new", "peer"), ("old", "peer")];
    paired(&parse_rounds(text), &["new", "old", "peer"], &pairs)
}

/// `--vs PEER`: rounds of any runners as medians and the ratio of each to PEER.
fn versus(text: &str, peer: &str) -> String {
    let rounds = parse_rounds(text);
    let runners = rounds.0.clone();
    let pairs: Vec<(&str, &str)> =
        runners.iter().filter(|r| **r != peer).map(|r| (*r, peer)).collect();
    paired(&rounds, &runners, &pairs)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let ab_mode = args.next_if(|a| a == "--ab").is_some();
    let peer = if args.next_if(|a| a == "--vs").is_some() { args.next() } else { None };
    let path = args.next().unwrap_or_else(|| {
        eprintln!("usage: report RESULTS.tsv | report --ab AB.tsv | report --vs PEER ROUNDS.tsv");
        std::process::exit(2)
    });
    if ab_mode || peer.is_some() {
        match std::fs::read_to_string(&path) {
            Ok(text) if ab_mode => print!("{}", ab(&text)),
            Ok(text) => print!("{}", versus(&text, peer.as_deref().unwrap_or_default())),
            Err(e) => {
                eprintln!("report: {path}: {e}");
                std::process::exit(2)
            }
        }
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("report: {path}: {e}");
        std::process::exit(2)
    });
    let mut runs: BTreeMap<(String, String), Vec<Run>> = BTreeMap::new();
    let mut rounds = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.splitn(5, '\t').collect();
        if cols.len() < 4 {
            continue;
        }
        rounds.insert(cols[0].to_owned());
        let fields: HashMap<String, String> = cols
            .get(4)
            .unwrap_or(&"")
            .split_whitespace()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let ok = cols[3] == "0" && fields.get("errors").is_some_and(|e| e == "0");
        runs.entry((cols[1].to_owned(), cols[2].to_owned())).or_default().push(Run {
            round: cols[0].to_owned(),
            ok,
            fields,
        });
    }
    let cells = Cells { runs: &runs };
    let failed: usize = runs.values().flatten().filter(|r| !r.ok).count();
    let present = |id: &str| runs.keys().any(|(s, _)| s == id);

    println!(
        "Medians of {} round(s). msg/s over the measured window; server CPU = utime+stime of the",
        rounds.len()
    );
    println!(
        "server process over that window (\"of which user\": utime, the server's own code; the rest"
    );
    println!("is the kernel's work for it); † = the load client used ≥ 90 % of its own core (it");
    println!("may be the limit); FAIL(n) = n runs with errors (not counted in the medians).\n");

    // WebSocket throughput.
    if SCENARIOS.iter().any(|(id, _, kind)| *kind == "ws" && present(id)) {
        // The uws column only when uWebSockets ran (scripts/bench.sh builds it when it can).
        let has_uws = runs.keys().any(|(_, server)| server == "uws");
        let (uws_head, uws_rule) = if has_uws { (" × uws |", "---:|") } else { ("", "") };
        println!("| scenario | server | msg/s | MB/s | server CPU µs/msg | of which user | server CPU % | × axum | × tungstenite-batched |{uws_head}");
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|{uws_rule}");
        for (id, title, _) in SCENARIOS.iter().filter(|(id, _, kind)| *kind == "ws" && present(id))
        {
            let base_axum = cells.get(id, "axum", "rate");
            let base_batched = cells.get(id, "tungstenite-batched", "rate");
            let base_uws = cells.get(id, "uws", "rate");
            for server in WS_SERVERS {
                if cells.runs(id, server).is_empty() {
                    continue;
                }
                let r = cells.get(id, server, "rate");
                let client_bound = *id != "pingpong"
                    && cells.get(id, server, "client_cpu_pct").is_some_and(|c| c >= 90.0);
                let fails = cells.failures(id, server);
                let shown = format!(
                    "{}{}{}",
                    r.map_or("—".into(), rate),
                    if client_bound { " †" } else { "" },
                    if fails > 0 { format!(" FAIL({fails})") } else { String::new() }
                );
                println!(
                    "| {title} | {server} | {shown} | {} | {} | {} | {} | {} | {} |{}",
                    num(cells.get(id, server, "mbps"), 1),
                    num(cells.get(id, server, "cpu_us_per_msg"), 2),
                    num(cells.get(id, server, "user_us_per_msg"), 2),
                    num(cells.get(id, server, "server_cpu_pct"), 0),
                    ratio(r, base_axum),
                    ratio(r, base_batched),
                    if has_uws { format!(" {} |", ratio(r, base_uws)) } else { String::new() },
                );
            }
        }
        println!();
    }

    // HTTP streams.
    if SCENARIOS.iter().any(|(id, _, kind)| *kind == "stream" && present(id)) {
        println!(
            "| scenario | server | GB/s | server CPU µs/chunk | server CPU % | × hyper-stream |"
        );
        println!("|---|---|---:|---:|---:|---:|");
        for (id, title, _) in
            SCENARIOS.iter().filter(|(id, _, kind)| *kind == "stream" && present(id))
        {
            let base = cells.get(id, "hyper-stream", "gbps");
            for server in STREAM_SERVERS {
                if cells.runs(id, server).is_empty() {
                    continue;
                }
                let g = cells.get(id, server, "gbps");
                let client_bound =
                    cells.get(id, server, "client_cpu_pct").is_some_and(|c| c >= 90.0);
                let fails = cells.failures(id, server);
                println!(
                    "| {title} | {server} | {}{}{} | {} | {} | {} |",
                    num(g, 2),
                    if client_bound { " †" } else { "" },
                    if fails > 0 { format!(" FAIL({fails})") } else { String::new() },
                    num(cells.get(id, server, "cpu_us_per_msg"), 3),
                    num(cells.get(id, server, "server_cpu_pct"), 0),
                    ratio(g, base),
                );
            }
        }
        println!();
    }

    // File downloads.
    if SCENARIOS.iter().any(|(id, _, kind)| *kind == "file" && present(id)) {
        let mib = |kib: Option<f64>| kib.map(|k| k / 1024.0);
        println!("| scenario | server | GB/s | server CPU µs/MiB | server CPU % | RSS before (MiB) | peak RSS (MiB) | × hyper-file |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for (id, title, _) in
            SCENARIOS.iter().filter(|(id, _, kind)| *kind == "file" && present(id))
        {
            let size = cells.first(id, "total").and_then(|t| t.parse::<f64>().ok());
            let title = match size {
                Some(bytes) => title.replacen(
                    "file",
                    &format!("file of {:.0} MiB", bytes / (1 << 20) as f64),
                    1,
                ),
                None => title.to_string(),
            };
            let base = cells.get(id, "hyper-file", "gbps");
            for server in FILE_SERVERS {
                if cells.runs(id, server).is_empty() {
                    continue;
                }
                let g = cells.get(id, server, "gbps");
                let client_bound =
                    cells.get(id, server, "client_cpu_pct").is_some_and(|c| c >= 90.0);
                println!(
                    "| {title} | {server} | {}{}{} | {} | {} | {} | {} | {} |",
                    num(g, 2),
                    if client_bound { " †" } else { "" },
                    fails_mark(cells.failures(id, server)),
                    num(cells.get(id, server, "cpu_us_per_mib"), 0),
                    num(cells.get(id, server, "server_cpu_pct"), 0),
                    num(mib(cells.get(id, server, "rss_before_kib")), 1),
                    num(mib(cells.get(id, server, "hwm_end_kib")), 1),
                    ratio(g, base),
                );
            }
        }
        println!();
        for id in ["file", "filelen"] {
            if let Some(query) = cells.first(id, "query") {
                println!("`{id}` requests: `GET /?{query}`.");
            }
        }
        println!("`cap`: hyper-file's ReaderStream read size (webchan reads a file 16 KiB at a time). Peak RSS:");
        println!("VmHWM of the server process at the end of the run (every body finished).\n");
    }

    // Idle HTTP streams.
    if present("idlehttp") {
        let n = cells.first("idlehttp", "conns").unwrap_or_default();
        println!("| idle HTTP streams ({n}) | server | KiB per idle stream | × hyper-idle |");
        println!("|---|---|---:|---:|");
        let base = cells.get("idlehttp", "hyper-idle", "idle_kib_per_conn");
        for server in IDLE_HTTP_SERVERS {
            if cells.runs("idlehttp", server).is_empty() {
                continue;
            }
            let idle = cells.get("idlehttp", server, "idle_kib_per_conn");
            println!(
                "| RSS growth / stream | {server} | {}{} | {} |",
                num(idle, 2),
                fails_mark(cells.failures("idlehttp", server)),
                ratio(idle, base),
            );
        }
        println!();
    }

    // Idle memory.
    if present("idle") {
        let n = runs
            .iter()
            .find(|((s, _), _)| s == "idle")
            .and_then(|(_, v)| v.first()?.fields.get("conns").cloned())
            .unwrap_or_default();
        println!("| idle WS connections ({n}) | server | KiB per idle connection | KiB per connection after one 64 KiB echo each | × axum (idle) |");
        println!("|---|---|---:|---:|---:|");
        let base = cells.get("idle", "axum", "idle_kib_per_conn");
        for server in WS_SERVERS {
            if cells.runs("idle", server).is_empty() {
                continue;
            }
            let idle = cells.get("idle", server, "idle_kib_per_conn");
            let fails = cells.failures("idle", server);
            println!(
                "| RSS growth / connection | {server} | {}{} | {} | {} |",
                num(idle, 1),
                if fails > 0 { format!(" FAIL({fails})") } else { String::new() },
                num(cells.get("idle", server, "after_kib_per_conn"), 1),
                ratio(idle, base),
            );
        }
        println!();
    }

    // Issue 5's goals, as far as these scenarios measure them.
    let g = |s: &str, v: &str, k: &str| cells.get(s, v, k);
    let mut goals = Goals::default();
    let both = |a: Option<f64>, b: Option<f64>, f: &dyn Fn(f64, f64) -> bool| match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        _ => None,
    };
    if present("echo16") {
        let (shown, verdict) =
            cells.absolute_goal("echo16", "webchan", "rate", 1e6, true, &rate, "");
        goals.0.push((format!("echo 16 B: ≥ 1.0M msg/s (webchan {shown})"), verdict));
        goals.ratio(&cells, "echo 16 B: ≥ 3.5× axum", "echo16", "webchan", "axum", "rate", 3.5);
        goals.ratio(
            &cells,
            "echo 16 B: ≥ 1.5× tungstenite-batched",
            "echo16",
            "webchan",
            "tungstenite-batched",
            "rate",
            1.5,
        );
        let us = |v: f64| format!("{v:.2}");
        let (shown, verdict) =
            cells.absolute_goal("echo16", "webchan", "cpu_us_per_msg", 1.0, false, &us, " µs");
        goals.0.push((format!("echo 16 B: server CPU ≤ 1 µs/msg ({shown})"), verdict));
    }
    if present("pingpong") {
        goals.ratio(
            &cells,
            "ping-pong: ≥ fastwebsockets",
            "pingpong",
            "webchan",
            "fastwebsockets",
            "rate",
            1.0,
        );
        goals.ratio(&cells, "ping-pong: ≥ 1.3× axum", "pingpong", "webchan", "axum", "rate", 1.3);
    }
    for (id, label) in [("echo16k", "16 KiB"), ("echo16ktext", "16 KiB text"), ("echo1m", "1 MiB")]
    {
        if present(id) {
            let label = format!("echo {label}: ≥ fastwebsockets");
            goals.ratio(&cells, &label, id, "webchan", "fastwebsockets", "rate", 1.0);
        }
    }
    for (id, label) in [("stream1k", "1 KiB"), ("stream64k", "64 KiB")] {
        if present(id) {
            let label = format!("HTTP stream {label} chunks: ≥ 1.0× raw hyper");
            goals.ratio(&cells, &label, id, "webchan-stream", "hyper-stream", "gbps", 1.0);
        }
    }
    if present("echo16") && !cells.runs("echo16", "uws").is_empty() {
        // Within 1.5× of uws: webchan's rate ≥ uws's / 1.5.
        goals.ratio(
            &cells,
            "echo 16 B: within 1.5× of uWebSockets (webchan / uws)",
            "echo16",
            "webchan",
            "uws",
            "rate",
            1.0 / 1.5,
        );
    }
    for (id, label) in [("file", "chunked"), ("filelen", "Content-Length")] {
        if present(id) {
            let speed = format!("file sends ({label}): ≥ 0.9× hyper + ReaderStream");
            goals.ratio(&cells, &speed, id, "webchan-file", "hyper-file", "gbps", 0.9);
            // Flat: the peak over the whole run stays below one file's size, while 16 whole
            // files are in flight at any time.
            let peak = g(id, "webchan-file", "hwm_end_kib");
            let size = cells.first(id, "total").and_then(|t| t.parse::<f64>().ok());
            goals.add(
                format!(
                    "file sends ({label}): memory flat (peak RSS {} MiB, hyper-file {} MiB; file {} MiB)",
                    num(peak.map(|k| k / 1024.0), 1),
                    num(g(id, "hyper-file", "hwm_end_kib").map(|k| k / 1024.0), 1),
                    num(size.map(|b| b / (1 << 20) as f64), 0),
                ),
                both(peak, size, &|p, s| p * 1024.0 < s),
            );
        }
    }
    if present("idlehttp") {
        // hyper's own HTTP/1 connection (its read and write buffers) costs ~15 KiB whoever
        // serves the body: the goal is what the channel adds to it, measured against the
        // raw-hyper server holding the same idle body.
        let idle = g("idlehttp", "webchan-idle", "idle_kib_per_conn");
        let base = g("idlehttp", "hyper-idle", "idle_kib_per_conn");
        let added = idle.zip(base).map(|(w, h)| w - h);
        goals.add(
            format!(
                "idle HTTP stream: ≤ 2 KiB per channel over hyper's own connection ({} KiB: {} in all, hyper alone {})",
                num(added, 2),
                num(idle, 2),
                num(base, 2)
            ),
            added.map(|v| v <= 2.0),
        );
    }
    if present("idle") {
        let n: u64 = cells.first("idle", "conns").and_then(|c| c.parse().ok()).unwrap_or(0);
        let ran = !cells.runs("idle", "webchan").is_empty();
        let ok = ran && cells.failures("idle", "webchan") == 0;
        goals.add(
            format!(
                "50,000 concurrent idle WS channels (this run: {n}{})",
                if ok { ", all fine" } else { "" }
            ),
            if n >= 50_000 && ran { Some(ok) } else { None },
        );
        let idle = g("idle", "webchan", "idle_kib_per_conn");
        let after = g("idle", "webchan", "after_kib_per_conn");
        goals.add(
            format!("idle WS: ≤ 4 KiB per connection ({} KiB)", num(idle, 1)),
            idle.map(|v| v <= 4.0),
        );
        goals.add(
            format!(
                "idle WS after a 64 KiB message: ≤ 8 KiB per connection ({} KiB)",
                num(after, 1)
            ),
            after.map(|v| v <= 8.0),
        );
    }
    if !goals.0.is_empty() {
        println!("| goal (issue 5) | met |");
        println!("|---|---|");
        for (name, met) in goals.0 {
            let met = match met {
                Verdict::Yes => "yes",
                Verdict::No => "no",
                Verdict::WithinNoise => "within noise",
                Verdict::Unknown => "—",
            };
            println!("| {name} | {met} |");
        }
        println!();
        println!(
            "Ratio goals with {MIN_PAIRED} or more rounds are judged on the ratios round by round, the echo's rate and CPU"
        );
        println!(
            "on webchan's figure round by round: their median and a distribution-free 95 % confidence interval for it;"
        );
        println!("\"within noise\" = the interval straddles the goal.");
        println!();
    }
    if failed > 0 {
        println!("{failed} run(s) FAILED: see the logs next to the results file.");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::{ab, median_interval, versus, Verdict};

    #[test]
    fn ab_pairs_the_runners_round_by_round() {
        let text = "1\tnew\t110\n1\told\t100\n1\tpeer\t200\n2\tnew\t90\n2\told\t100\n";
        let out = ab(text);
        assert!(out.contains("new: median 100 msg/s over 2 rounds"), "{out}");
        assert!(
            out.contains("new/old: median 1.000, no interval under 6 rounds (2 rounds)"),
            "{out}"
        );
        assert!(out.contains("new/peer: median 0.550"), "{out}");
        let six: String =
            (1..=6).map(|r| format!("{r}\tnew\t{}\n{r}\told\t100\n", 100 + r)).collect();
        assert!(
            ab(&six).contains("new/old: median 1.035, 95 % CI 1.010-1.060 (6 rounds)"),
            "{}",
            ab(&six)
        );
    }

    #[test]
    fn versus_pairs_every_runner_with_the_peer() {
        let text: String =
            (1..=6).map(|r| format!("{r}\ta\t{}\n{r}\tb\t50\n{r}\tpeer\t100\n", 100 + r)).collect();
        let out = versus(&text, "peer");
        assert!(out.starts_with("a: median"), "{out}");
        assert!(out.contains("a/peer: median 1.035, 95 % CI 1.010-1.060 (6 rounds)"), "{out}");
        assert!(out.contains("b/peer: median 0.500, 95 % CI 0.500-0.500 (6 rounds)"), "{out}");
        assert!(!out.contains("peer/peer"), "{out}");
    }

    #[test]
    fn interval_ranks_follow_the_binomial_law() {
        let values = |n: usize| (1..=n).map(|v| v as f64).collect::<Vec<_>>();
        assert_eq!(median_interval(&values(5)), None);
        // n = 6: P(B <= 0) = 1/64, P(B <= 1) = 7/64: the range.
        assert_eq!(median_interval(&values(6)), Some((3.5, 1.0, 6.0)));
        // n = 10: P(B <= 1) = 11/1024, P(B <= 2) = 56/1024: ranks 2 and 9.
        assert_eq!(median_interval(&values(10)), Some((5.5, 2.0, 9.0)));
        // n = 30: P(B <= 9) = 0.0214, P(B <= 10) = 0.0494: ranks 10 and 21.
        assert_eq!(median_interval(&values(30)), Some((15.5, 10.0, 21.0)));
        // Order does not matter.
        let mut shuffled = values(10);
        shuffled.reverse();
        assert_eq!(median_interval(&shuffled), Some((5.5, 2.0, 9.0)));
    }

    #[test]
    fn an_interval_that_straddles_the_bound_is_within_noise_either_way() {
        // At least 1.0 (a rate, a ratio).
        assert_eq!(Verdict::of_interval(1.0, 1.2, 1.0, true), Verdict::Yes);
        assert_eq!(Verdict::of_interval(0.8, 0.99, 1.0, true), Verdict::No);
        assert_eq!(Verdict::of_interval(0.9, 1.1, 1.0, true), Verdict::WithinNoise);
        // At most 1.0 (a CPU time per message).
        assert_eq!(Verdict::of_interval(0.7, 1.0, 1.0, false), Verdict::Yes);
        assert_eq!(Verdict::of_interval(1.01, 1.2, 1.0, false), Verdict::No);
        assert_eq!(Verdict::of_interval(0.73, 1.09, 1.0, false), Verdict::WithinNoise);
    }
}
