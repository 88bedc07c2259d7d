// vmdr's operators' console. It reads drd's API, as drctl does: the status
// stream (a snapshot, then each tick's changes), the event stream, a VM's
// detail; it sends commands with the token the operator types in. Nothing
// here polls: what changes arrives on the streams.

const STATES = {
  down: 'Down',
  gave_up: 'Gave up',
  recovering: 'Recovering',
  suspect: 'Suspect',
  paused: 'Automation paused',
  user_stopped: 'Stopped by a person',
  suspended: 'Suspended',
  healthy: 'Healthy',
  unknown: 'Not judged yet',
};

// Alerts that need a person, in the words an operator acts on.
const ALERTS = {
  gave_up: 'Recoveries failed too often: vmdr stopped trying.',
  needs_fencing: 'Its host is unreachable and must be fenced before the VM can move.',
  no_capacity: 'It must move, and no connected host or spare has room.',
  no_recovery_source: 'It must move, and it has neither a snapshot nor a replica.',
  host_down_unproven:
    'Its host is lost, but nothing proves its VMs stopped: starting them elsewhere could run them twice.',
  guest_unresponsive: 'It runs but does not answer, and it has no guest heartbeat to judge it by.',
  host_in_maintenance: 'Its host is in maintenance mode.',
  guest_unreachable: 'It runs with a live guest heartbeat but does not answer: a network problem.',
};

const WHY = {
  healthy: 'answers probes',
  user_stopped: 'switched off by a person: left alone',
  suspended: 'suspended by a person: left alone',
  paused: 'automation paused by an operator',
  suspect: 'missed probes, fewer than the threshold',
  left_to_ha: 'its host failed: vSphere HA restarts it, not vmdr',
  in_flight: 'a recovery is running',
  backoff: 'waiting: back-off after a failed recovery, or grace after a restart',
  host_not_confirmed_down: 'waiting: its host is unreachable but not confirmed down',
  host_recovery_in_flight: 'waiting: its host is being recovered',
  host_limit: 'waiting: the per-host limit of recoveries is reached',
  cluster_limit: 'waiting: the limit of concurrent recoveries is reached',
  state_unknown: 'waiting: the hypervisor does not know its power state',
  awaiting_host: 'waiting: a spare host is being added for it',
  host_self_fenced: 'waiting: its host\'s agent destroyed its guests while cut off',
  host_fencing: 'waiting: its host is being fenced',
};

const ACTIONS = {
  power_on: 'Power on',
  reset: 'Reset',
  revert_to_snapshot: 'Revert to snapshot',
  fence_host: 'Fence host',
  recover_host: 'Recover host',
  restore: 'Restore on another host',
  add_host_then_restore: 'Add a host, then restore',
};

// What an observation is of, in an operator's words.
const FIELDS = {
  reachable: 'answers probes',
  power: 'power',
  heartbeat: 'guest heartbeat',
  host: 'moved to host',
  down: 'judged down',
  link: 'host link',
};

const RECENT_KEPT = 500;

const $ = (id) => document.getElementById(id);
const esc = (s) =>
  String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

// What the console knows: the status stream's picture, the recent events.
const model = {
  hosts: new Map(),
  vms: new Map(),
  replication: [],
  events: [],
  ticks: 0,
  view: null,
  inFlight: 0,
  // Daemon clock (ms) to wall clock: wall = at + offset.
  offset: 0,
  streamed: false,
};

// For measurement (docs/BENCHMARKS.md): when the overview first rendered
// and reached the screen (ms from navigation), and for the last changes
// streamed: when drd published each (wall clock), when it was applied and
// the next frame drawn, what applying it cost.
const measured = { firstRenderMs: null, firstPaintMs: null, deltas: [] };
const DELTAS_MEASURED = 200;
window.vmdrConsole = measured;

const filter = { name: '', state: null };
let tiles = new Map();
let route = { view: 'overview' };

// ---- formatting ----

function stateLabel(s) {
  return STATES[s] ?? s;
}

function decisionText(d) {
  if (!d) return 'not judged yet';
  if (d.decision === 'none' || d.decision === 'wait') return WHY[d.why] ?? d.why;
  if (d.decision === 'alert') return ALERTS[d.why] ?? d.why;
  const what = {
    restart_in_place: d.reset ? 'reset it in place' : 'power it on in place',
    revert_to_snapshot: 'revert it to its newest snapshot',
    fence_host: 'fence its host',
    recover_host: 'recover its host from its snapshot',
    restore: `restore it on another host from its ${d.source ?? 'copy'}`,
    add_host_then_restore: `add a spare host and restore it there from its ${d.source ?? 'copy'}`,
  }[d.decision];
  return what ? `decided: ${what}` : d.decision;
}

function seconds(ms) {
  if (ms == null) return '—';
  return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

function clock(atMs) {
  const d = new Date(atMs + model.offset);
  return d.toLocaleTimeString([], { hour12: false });
}

// A time from the Unix epoch (a checkpoint's), on this browser's clock.
function wallClock(ms) {
  return new Date(ms).toLocaleString([], { hour12: false });
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(1)} ${u[i]}`;
}

function eventText(e) {
  switch (e.type) {
    case 'observation':
      return [FIELDS[e.field] ?? e.field, `${e.from || '—'} → ${e.to}`];
    case 'decision':
      return ['decision', decisionText(e.decision) + (e.host ? ` (host ${e.host})` : '')];
    case 'action_started':
      return ['recovery started', ACTIONS[e.action.kind] ?? e.action.kind];
    case 'action_finished':
      return [
        e.ok ? 'recovery succeeded' : 'recovery failed',
        `${ACTIONS[e.action.kind] ?? e.action.kind} in ${seconds(e.duration_ms)}` +
          (e.attempts > 1 ? `, ${e.attempts} attempts` : '') +
          (e.error ? `: ${e.error}` : ''),
      ];
    case 'operation_started':
      return [`${opName(e.operation)} started`, `${e.from} → ${e.to}`];
    case 'operation_finished':
      return [
        `${opName(e.operation)} ${e.ok ? 'done' : 'failed'}`,
        `${e.from} → ${e.to} in ${seconds(e.duration_ms)}` + (e.error ? `: ${e.error}` : ''),
      ];
    default:
      return [e.type, ''];
  }
}

function opName(op) {
  return op === 'planned_failover' ? 'planned failover' : op;
}

function eventVm(e) {
  if (e.type === 'observation') return e.subject.vm ?? null;
  if (e.type === 'action_started' || e.type === 'action_finished') return e.action.vm;
  return e.vm ?? null;
}

// ---- overview ----

function tileHtml(v) {
  return `<a class="tile s-${v.state}" href="#/vm/${encodeURIComponent(v.name)}" data-vm="${esc(v.name)}" data-state="${v.state}" title="${esc(v.name)}: ${esc(stateLabel(v.state))}"><span>${esc(v.name)}</span></a>`;
}

function hostLine(h) {
  const bits = [];
  if (h.reachable === false) bits.push('<span class="warn">unreachable</span>');
  if (h.link && h.link !== 'Connected') bits.push(esc(h.link.toLowerCase()));
  if (h.evidence && h.evidence !== 'not_down') bits.push(`evidence: ${esc(h.evidence)}`);
  if (h.in_flight) bits.push(`${h.in_flight} recovering`);
  if (h.fence && h.fence.state !== 'no_device' && h.fence.state !== 'ready') bits.push(`fence ${esc(h.fence.state)}`);
  return bits.join(' · ');
}

function renderOverview() {
  const bySite = new Map();
  for (const h of model.hosts.values()) {
    if (!bySite.has(h.site)) bySite.set(h.site, []);
    bySite.get(h.site).push(h);
  }
  const byHost = new Map();
  for (const v of model.vms.values()) {
    if (!byHost.has(v.host)) byHost.set(v.host, []);
    byHost.get(v.host).push(v);
  }
  const parts = [];
  for (const [site, hosts] of bySite) {
    parts.push(`<section class="site"><h3>Site ${esc(site || '—')}</h3>`);
    for (const h of hosts) {
      const vms = byHost.get(h.name) ?? [];
      parts.push(
        `<section class="host" data-host="${esc(h.name)}"><h4>${esc(h.name)} <small class="host-line">${hostLine(h)}</small></h4><div class="tiles">${vms.map(tileHtml).join('')}</div></section>`,
      );
    }
    parts.push('</section>');
  }
  // VMs on a host the inventory does not list (yet).
  const orphans = [...model.vms.values()].filter((v) => !model.hosts.has(v.host));
  if (orphans.length) {
    parts.push(`<section class="site"><h3>Other hosts</h3><section class="host" data-host=""><div class="tiles">${orphans.map(tileHtml).join('')}</div></section></section>`);
  }
  $('sites').innerHTML = parts.join('');
  tiles = new Map();
  for (const el of $('sites').querySelectorAll('[data-vm]')) tiles.set(el.dataset.vm, el);
  applyFilter();
  renderCounts();
}

function updateTile(v) {
  const el = tiles.get(v.name);
  if (!el) return false;
  if (el.dataset.state !== v.state) {
    el.className = `tile s-${v.state}`;
    el.dataset.state = v.state;
    el.title = `${v.name}: ${stateLabel(v.state)}`;
  }
  const host = el.closest('[data-host]');
  if (host && host.dataset.host !== v.host) return false;
  el.hidden = !matches(v);
  return true;
}

function matches(v) {
  return (!filter.state || v.state === filter.state) && (!filter.name || v.name.toLowerCase().includes(filter.name));
}

function applyFilter() {
  for (const [name, el] of tiles) {
    const v = model.vms.get(name);
    el.hidden = !v || !matches(v);
  }
  for (const host of $('sites').querySelectorAll('.host')) {
    const any = host.querySelector('.tile:not([hidden])');
    host.hidden = !any && (filter.state || filter.name);
  }
}

function renderCounts() {
  const counts = {};
  for (const v of model.vms.values()) counts[v.state] = (counts[v.state] ?? 0) + 1;
  const chips = [`<button type="button" class="chip${filter.state ? '' : ' on'}" data-state="" aria-pressed="${!filter.state}">All <b>${model.vms.size}</b></button>`];
  for (const s of Object.keys(STATES)) {
    if (!counts[s] && filter.state !== s) continue;
    chips.push(
      `<button type="button" class="chip s-${s}${filter.state === s ? ' on' : ''}" data-state="${s}" aria-pressed="${filter.state === s}">${esc(stateLabel(s))} <b data-count="${s}">${counts[s] ?? 0}</b></button>`,
    );
  }
  $('counts').innerHTML = chips.join('');
  const alerts = alertVms().length;
  $('alert-count').hidden = alerts === 0;
  $('alert-count').textContent = alerts;
}

// ---- activity ----

function alertVms() {
  return [...model.vms.values()].filter(
    (v) => v.state === 'gave_up' || (v.decision?.decision === 'alert' && v.decision.why !== 'guest_unreachable'),
  );
}

function renderActivity() {
  const alerts = alertVms();
  $('alerts').innerHTML = alerts.length
    ? `<ul class="alerts">${alerts
        .map(
          (v) =>
            `<li><a href="#/vm/${encodeURIComponent(v.name)}">${esc(v.name)}</a> on ${esc(v.host)}: ${esc(ALERTS[v.decision?.why] ?? ALERTS.gave_up)}</li>`,
        )
        .join('')}</ul>`
    : '<p class="quiet">Nothing needs a person now.</p>';

  // Started and not finished: running now.
  const running = new Map();
  const done = [];
  for (const e of model.events) {
    if (e.type === 'action_started') running.set(`a:${e.action.vm}:${e.action.kind}`, e);
    else if (e.type === 'action_finished') {
      running.delete(`a:${e.action.vm}:${e.action.kind}`);
      done.push(e);
    } else if (e.type === 'operation_started') running.set(`o:${e.vm}:${e.operation}`, e);
    else if (e.type === 'operation_finished') {
      running.delete(`o:${e.vm}:${e.operation}`);
      done.push(e);
    }
  }
  const now = Date.now();
  const rows = [...running.values()].map((e) => {
    const vm = eventVm(e);
    const what = e.type === 'action_started' ? ACTIONS[e.action.kind] ?? e.action.kind : opName(e.operation);
    return `<tr><td><a href="#/vm/${encodeURIComponent(vm)}">${esc(vm)}</a></td><td>${esc(what)}</td><td>${clock(e.at_ms)}</td><td>${seconds(now - (e.at_ms + model.offset))}</td></tr>`;
  });
  $('running').innerHTML = rows.length
    ? `<table><thead><tr><th>VM</th><th>Recovery</th><th>Started</th><th>Running for</th></tr></thead><tbody>${rows.join('')}</tbody></table>`
    : '<p class="quiet">No recovery is running.</p>';

  const recent = done.slice(-50).reverse().map((e) => {
    const vm = eventVm(e);
    const what = e.type === 'action_finished' ? ACTIONS[e.action.kind] ?? e.action.kind : opName(e.operation);
    const outcome = e.ok ? '<span class="ok">succeeded</span>' : `<span class="bad">failed</span>${e.error ? `: ${esc(e.error)}` : ''}`;
    return `<tr><td><a href="#/vm/${encodeURIComponent(vm)}">${esc(vm)}</a></td><td>${esc(what)}</td><td>${clock(e.at_ms)}</td><td>${seconds(e.duration_ms)}</td><td>${outcome}</td></tr>`;
  });
  $('recent').innerHTML = recent.length
    ? `<table><thead><tr><th>VM</th><th>Recovery</th><th>Ended</th><th>Took</th><th>Outcome</th></tr></thead><tbody>${recent.join('')}</tbody></table>`
    : '<p class="quiet">None since drd started.</p>';
}

// ---- replication ----

function rpoCell(t, target) {
  if (t.rpo_ms == null) return '<td>—</td>';
  const over = target != null && t.rpo_ms > target;
  return `<td class="${over ? 'bad' : 'ok'}" title="${over ? 'over' : 'within'} its target of ${seconds(target)}">${seconds(t.rpo_ms)}</td>`;
}

function replicationRows(list) {
  const rows = [];
  for (const r of list) {
    const targets = r.targets.length ? r.targets : [{ target: '—', lag_bytes: 0, failures: 0 }];
    targets.forEach((t, i) => {
      rows.push(
        `<tr>${i === 0 ? `<td rowspan="${targets.length}"><a href="#/vm/${encodeURIComponent(r.vm)}">${esc(r.vm)}</a>${r.error ? `<br><span class="bad">${esc(r.error)}</span>` : ''}</td><td rowspan="${targets.length}">${seconds(r.rpo_target_ms)}</td>` : ''}<td>${esc(t.target)}</td><td>${t.checkpoint ?? '—'}</td>${rpoCell(t, r.rpo_target_ms)}<td>${bytes(t.lag_bytes)}</td><td>${t.failures}</td><td>${t.error ? `<span class="bad">${esc(t.error)}</span>` : ''}</td></tr>`,
      );
    });
  }
  return `<table><thead><tr><th>VM</th><th>RPO target</th><th>Receiver</th><th>Acknowledged checkpoint</th><th>RPO</th><th>Lag</th><th>Failed connections</th><th>Last error</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function renderReplication() {
  $('replicas').innerHTML = model.replication.length
    ? replicationRows(model.replication)
    : '<p class="quiet">No VM is replicated by this drd.</p>';
}

// ---- a VM's page ----

let vmPage = null;

async function openVm(name) {
  $('vm-title').textContent = name;
  $('vm-body').innerHTML = '<p class="quiet">Loading…</p>';
  vmPage = { name, detail: null, result: '' };
  await loadVm(name, true);
}

// Reads the VM's detail into its page (still open on it); a failure is
// shown only on the first read, a later one keeps what is shown.
async function loadVm(name, first) {
  const r = await fetch(`/api/v1/vms/${encodeURIComponent(name)}`);
  if (vmPage?.name !== name) return;
  if (!r.ok) {
    if (!first) return;
    const body = await r.json().catch(() => ({}));
    $('vm-body').innerHTML = `<p class="bad">${esc(body.error ?? `drd answered ${r.status}`)}</p>`;
    return;
  }
  const detail = await r.json();
  if (vmPage?.name !== name) return;
  vmPage.detail = detail;
  if (detail.receives_replica) await loadCheckpoints(name);
  renderVm();
}

// The checkpoints of the VM's replica this drd receives: the points a
// planned failover can go back to. A failed read keeps what is shown.
async function loadCheckpoints(name) {
  const r = await fetch(`/api/v1/vms/${encodeURIComponent(name)}/checkpoints`);
  if (vmPage?.name !== name || !r.ok) return;
  const body = await r.json().catch(() => null);
  if (vmPage?.name !== name || !body) return;
  vmPage.checkpoints = body.checkpoints;
}

// Newest first, at most this many rows (a replica keeps what its `keep`
// says; the API lists them all).
const CHECKPOINTS_SHOWN = 50;

function checkpointRows(list) {
  const newest = list.slice(-CHECKPOINTS_SHOWN).reverse();
  const more = list.length > newest.length ? `<p class="quiet">The newest ${newest.length} of ${list.length}.</p>` : '';
  return `<table class="checkpoints"><thead><tr><th>Taken</th><th>Checkpoint</th><th>Disks</th><th></th></tr></thead><tbody>${newest
    .map(
      (c, i) =>
        `<tr><td>${esc(wallClock(c.time_ms))}</td><td>${c.id}${i === 0 ? ' <span class="quiet">(newest)</span>' : ''}</td><td>${c.disks.length}</td>` +
        `<td><button type="button" class="cmd-point" data-id="${c.id}" data-time="${c.time_ms}" aria-label="Fail over to checkpoint ${c.id}, taken ${esc(wallClock(c.time_ms))}…">Fail over to this point…</button></td></tr>`,
    )
    .join('')}</tbody></table>${more}`;
}

function renderCheckpoints(d) {
  if (!d.receives_replica) return '';
  const list = vmPage.checkpoints;
  const body = list == null
    ? '<p class="quiet">Loading…</p>'
    : list.length
      ? checkpointRows(list)
      : '<p class="quiet">The replica holds no complete checkpoint yet.</p>';
  return `<h3>Checkpoints of its replica here</h3>${body}`;
}

function renderVm() {
  if (!vmPage?.detail) return;
  const d = vmPage.detail;
  const v = model.vms.get(vmPage.name) ?? d.vm;
  const facts = [
    ['State', `<span class="badge s-${v.state}">${esc(stateLabel(v.state))}</span>`],
    ['Why', esc(decisionText(v.decision))],
    ['Host', esc(v.host)],
    ['Address', esc(v.ip ?? 'none known: judged by the hypervisor')],
    ['Power', esc(v.power)],
    ['Answers probes', v.reachable == null ? '—' : v.reachable ? 'yes' : `no (${v.probe_failures} missed)`],
    ['Guest heartbeat', esc(v.heartbeat)],
    ['Snapshot to revert to', v.snapshot ? 'yes' : 'no'],
    ['Replica to restore from', v.replica ? 'yes' : 'no'],
  ];
  const commands = `
    <div class="commands" role="group" aria-label="Commands">
      ${v.paused
        ? '<button type="button" id="cmd-resume">Resume automation</button>'
        : '<button type="button" id="cmd-pause">Pause automation</button>'}
      <button type="button" id="cmd-failover">Planned failover…</button>
      <button type="button" id="cmd-drill">Recovery drill…</button>
      <output id="cmd-result" class="result" aria-live="polite">${vmPage.result}</output>
    </div>`;
  const outages = d.outages.length
    ? `<table><thead><tr><th>Stopped answering</th><th>Judged down after</th><th>Back after (RTO)</th><th>By</th></tr></thead><tbody>${d.outages
        .map(
          (o) =>
            `<tr><td>${clock(o.since_ms)}</td><td>${seconds(o.detection_ms)}</td><td>${o.rto_ms == null ? '<span class="warn">not back yet</span>' : seconds(o.rto_ms)}</td><td>${esc(ACTIONS[o.action] ?? o.action ?? '—')}</td></tr>`,
        )
        .join('')}</tbody></table>`
    : '<p class="quiet">No outage since drd started.</p>';
  const repl = d.replication ? replicationRows([d.replication]) : '<p class="quiet">Not replicated by this drd.</p>';
  const timeline = d.timeline.length
    ? `<table class="timeline"><thead><tr><th>Time</th><th>What</th><th>Detail</th></tr></thead><tbody>${d.timeline
        .slice()
        .reverse()
        .map((e) => {
          const [what, detail] = eventText(e);
          return `<tr class="t-${e.type}"><td>${clock(e.at_ms)}</td><td>${esc(what)}</td><td>${esc(detail)}</td></tr>`;
        })
        .join('')}</tbody></table>`
    : '<p class="quiet">Nothing recorded since drd started.</p>';
  $('vm-body').innerHTML = `
    <dl class="facts">${facts.map(([k, x]) => `<dt>${k}</dt><dd>${x}</dd>`).join('')}</dl>
    ${commands}
    <h3>Outages</h3>${outages}
    <h3>Replication</h3>${repl}
    ${renderCheckpoints(d)}
    <h3>Timeline</h3>${timeline}`;
  $('cmd-pause')?.addEventListener('click', () => command('pause'));
  $('cmd-resume')?.addEventListener('click', () => command('resume'));
  $('cmd-failover').addEventListener('click', () => command('failover'));
  $('cmd-drill').addEventListener('click', () => command('drill'));
  for (const b of document.querySelectorAll('.cmd-point'))
    b.addEventListener('click', () =>
      command('point', { checkpoint: Number(b.dataset.id), time: Number(b.dataset.time) }),
    );
}

// ---- commands ----

const COMMANDS = {
  pause: {
    title: (vm) => `Pause automation for ${vm}?`,
    text: 'vmdr will not recover it, whatever happens to it, until automation is resumed.',
    doing: 'Pausing…',
    done: () => 'Automation paused.',
  },
  resume: {
    title: (vm) => `Resume automation for ${vm}?`,
    text: 'vmdr will recover it again when it goes down.',
    doing: 'Resuming…',
    done: () => 'Automation resumed.',
  },
  failover: {
    title: (vm) => `Planned failover of ${vm}?`,
    text: 'It is stopped cleanly, then started on the target host (from its replica if the target is on another site). It is unavailable meanwhile.',
    target: true,
    doing: 'Failing over…',
    done: (r) => `Failed over from ${r.from} to ${r.to} (${String(r.method).replace(/_/g, ' ')}), down for ${seconds(r.downtime_ms)}.`,
  },
  point: {
    title: (vm, x) => `Fail ${vm} over to checkpoint ${x.checkpoint}?`,
    text: (x) =>
      `It is stopped cleanly and started on the target host with its disks as they were at ${wallClock(x.time)}. ` +
      'Whatever it wrote after that point is not in them.',
    target: true,
    path: 'failover',
    query: (x) => ({ checkpoint: String(x.checkpoint) }),
    doing: 'Failing over to that point…',
    done: (r) => `Failed over from ${r.from} to ${r.to} as of checkpoint ${r.checkpoint}, down for ${seconds(r.downtime_ms)}.`,
  },
  drill: {
    title: (vm) => `Recovery drill of ${vm}?`,
    text: 'An isolated copy is brought up, checked, timed and removed. The VM itself is not touched.',
    target: true,
    doing: 'Drill running…',
    done: (r) => `Drill done: a copy from its ${r.source} was up on ${r.host} in ${seconds(r.rto_ms)}, then removed${r.production_untouched ? '; the VM itself was untouched' : ''}.`,
  },
};

function confirmDialog(title, text, withTarget, vm) {
  return new Promise((resolve) => {
    const dlg = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-extra').innerHTML = withTarget
      ? `<label>Target host <select id="confirm-target"><option value="">chosen by vmdr</option>${[...model.hosts.values()]
          .filter((h) => h.name !== vm.host)
          .map((h) => `<option value="${esc(h.name)}">${esc(h.name)} (site ${esc(h.site)})</option>`)
          .join('')}</select></label>`
      : '';
    const done = (ok) => {
      $('confirm-ok').onclick = null;
      $('confirm-cancel').onclick = null;
      dlg.onclose = null;
      const target = withTarget ? $('confirm-target').value : '';
      if (dlg.open) dlg.close();
      resolve(ok ? { target } : null);
    };
    $('confirm-ok').onclick = () => done(true);
    $('confirm-cancel').onclick = () => done(false);
    dlg.onclose = () => done(false);
    dlg.showModal();
    $('confirm-cancel').focus();
  });
}

async function command(kind, extra = {}) {
  const c = COMMANDS[kind];
  const name = vmPage.name;
  const vm = model.vms.get(name) ?? vmPage.detail.vm;
  const text = typeof c.text === 'function' ? c.text(extra) : c.text;
  const answer = await confirmDialog(c.title(name, extra), text, c.target, vm);
  if (!answer) return;
  const show = (html) => {
    if (vmPage?.name !== name) return;
    vmPage.result = html;
    const out = $('cmd-result');
    if (out) out.innerHTML = html;
  };
  show(`<span class="busy">${esc(c.doing)}</span>`);
  const token = $('token').value.trim();
  const params = new URLSearchParams(c.query ? c.query(extra) : {});
  if (answer.target) params.set('to', answer.target);
  const qs = params.toString();
  const query = qs ? `?${qs}` : '';
  try {
    const r = await fetch(`/api/v1/vms/${encodeURIComponent(name)}/${c.path ?? kind}${query}`, {
      method: 'POST',
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    const body = await r.json().catch(() => ({}));
    if (r.ok) {
      show(`<span class="ok">${esc(c.done(body))}</span>`);
      if (kind === 'point' || kind === 'failover') loadVm(name, false);
    }
    else if (r.status === 401 || r.status === 403)
      show(`<span class="bad">Refused: ${esc(body.error ?? r.statusText)}. Enter the API token above.</span>`);
    else show(`<span class="bad">Not done: ${esc(body.error ?? `drd answered ${r.status}`)}</span>`);
  } catch (e) {
    show(`<span class="bad">drd did not answer: ${esc(e.message)}</span>`);
  }
}

// ---- routing ----

function parseRoute() {
  const h = location.hash.replace(/^#\/?/, '');
  if (h.startsWith('vm/')) return { view: 'vm', vm: decodeURIComponent(h.slice(3)) };
  if (h === 'activity' || h === 'replication') return { view: h };
  return { view: 'overview' };
}

function show() {
  route = parseRoute();
  for (const id of ['overview', 'activity', 'replication', 'vm']) $(id).hidden = id !== route.view;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.view === route.view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  vmPage = null;
  if (route.view === 'vm') openVm(route.vm);
  else $('vm-body').innerHTML = '';
  if (route.view === 'activity') renderActivity();
  if (route.view === 'replication') renderReplication();
  document.title = route.view === 'vm' ? `${route.vm} · vmdr` : 'vmdr console';
}

// ---- the streams ----

function setConnection(live, text) {
  const el = $('connection');
  el.textContent = text;
  el.className = `connection ${live ? 'live' : 'down'}`;
}

function renderFreshness() {
  const v = model.view;
  const el = $('freshness');
  if (!v) return;
  const banner = $('banner');
  if (v.stale) {
    banner.hidden = false;
    banner.textContent =
      `What is shown may be out of date: drd's view is ${v.age_ms == null ? 'not read yet' : `${seconds(v.age_ms)} old`}` +
      (v.failing ? ` (${v.failing.step} failing: ${v.failing.error})` : '') +
      '.';
  } else banner.hidden = true;
  el.textContent = `${model.vms.size} VMs on ${model.hosts.size} hosts · ${model.inFlight} recovering`;
}

function takeSnapshot(snap) {
  const s = snap.status;
  model.hosts = new Map(s.hosts.map((h) => [h.name, h]));
  model.vms = new Map(s.vms.map((v) => [v.name, v]));
  model.replication = snap.replication ?? [];
  model.ticks = s.ticks;
  model.view = s.view;
  model.inFlight = s.in_flight;
  if (s.at_ms) model.offset = snap.wall_ms - s.at_ms;
  renderOverview();
  if (measured.firstRenderMs == null) {
    measured.firstRenderMs = performance.now();
    requestAnimationFrame(() => setTimeout(() => (measured.firstPaintMs = performance.now())));
  }
  renderFreshness();
  refreshViews(true);
}

function applyDelta(d) {
  const t0 = performance.now();
  let layout = d.removed_hosts.length > 0;
  for (const h of d.hosts) {
    if (!model.hosts.has(h.name)) layout = true;
    model.hosts.set(h.name, h);
  }
  for (const n of d.removed_hosts) model.hosts.delete(n);
  for (const n of d.removed_vms) {
    model.vms.delete(n);
    tiles.get(n)?.remove();
    tiles.delete(n);
  }
  for (const v of d.vms) {
    model.vms.set(v.name, v);
    if (!layout && !updateTile(v)) layout = true;
  }
  if (d.replication) model.replication = d.replication;
  model.ticks = d.ticks;
  model.view = d.view;
  model.inFlight = d.in_flight;
  model.offset = d.wall_ms - d.at_ms;
  if (layout) renderOverview();
  else {
    for (const h of d.hosts) {
      const line = $('sites').querySelector(`[data-host="${CSS.escape(h.name)}"] .host-line`);
      if (line) line.innerHTML = hostLine(h);
    }
    if (d.vms.length || d.removed_vms.length) renderCounts();
  }
  renderFreshness();
  if (d.vms.length || d.replication) refreshViews(false, d.vms);
  const m = { wallMs: d.wall_ms, shownMs: Date.now(), applyMs: performance.now() - t0, vms: d.vms.length, paintedMs: null };
  requestAnimationFrame(() => setTimeout(() => (m.paintedMs = Date.now())));
  measured.deltas.push(m);
  if (measured.deltas.length > DELTAS_MEASURED) measured.deltas.shift();
}

function refreshViews(all, vms = []) {
  if (route.view === 'activity') renderActivity();
  if (route.view === 'replication') renderReplication();
  if (route.view === 'vm' && (all || vms.some((v) => v.name === vmPage?.name))) renderVm();
}

function streamStatus() {
  const es = new EventSource('/api/v1/status/stream');
  es.addEventListener('snapshot', (m) => {
    setConnection(true, 'live');
    takeSnapshot(JSON.parse(m.data));
  });
  es.addEventListener('delta', (m) => applyDelta(JSON.parse(m.data)));
  // EventSource reconnects by itself, and the server begins again with a
  // snapshot.
  es.onerror = () => setConnection(false, 'reconnecting to drd…');
}

function addEvent(e) {
  model.events.push(e);
  if (model.events.length > RECENT_KEPT) model.events.splice(0, model.events.length - RECENT_KEPT);
  if (route.view === 'activity' && (e.type.startsWith('action') || e.type.startsWith('operation'))) renderActivity();
  if (route.view === 'vm' && vmPage?.detail && eventVm(e) === vmPage.name) {
    vmPage.detail.timeline.push(e);
    if (e.type === 'action_finished') {
      // Its outages changed too: read them again.
      loadVm(vmPage.name, false);
    } else renderVm();
  }
}

async function streamEvents() {
  let since = 0;
  try {
    const r = await fetch(`/api/v1/events?tail=${RECENT_KEPT}`);
    if (r.ok) {
      model.events = await r.json();
      since = model.events.at(-1)?.id ?? 0;
    }
  } catch {
    // The stream below retries; the list is only what came before.
  }
  const es = new EventSource(`/api/v1/events/stream?since=${since}`);
  es.onmessage = (m) => addEvent(JSON.parse(m.data));
  es.addEventListener('lagged', () => {
    // Missed some: the activity lists are rebuilt from the kept events.
    fetch(`/api/v1/events?tail=${RECENT_KEPT}`)
      .then((r) => (r.ok ? r.json() : model.events))
      .then((list) => {
        model.events = list;
        if (route.view === 'activity') renderActivity();
      });
  });
}

// ---- start ----

function start() {
  const token = $('token');
  token.value = sessionStorage.getItem('vmdr-token') ?? '';
  token.addEventListener('input', () => sessionStorage.setItem('vmdr-token', token.value));
  $('filter').addEventListener('input', (e) => {
    filter.name = e.target.value.trim().toLowerCase();
    applyFilter();
  });
  $('counts').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-state]');
    if (!b) return;
    filter.state = b.dataset.state || null;
    applyFilter();
    renderCounts();
  });
  window.addEventListener('hashchange', show);
  // The "running for" column of recoveries in progress.
  setInterval(() => route.view === 'activity' && renderActivity(), 1000);
  show();
  streamStatus();
  streamEvents();
}

start();
