// The demo page: a live task board on the realtime client library, no framework.
import { createRealtimeClient } from '/client/realtime-client.js';

const AUTH_KEY = 'realtime-demo-auth';
const STRATEGY_KEY = 'realtime-demo-strategy';
const STATUSES = ['todo', 'doing', 'done'];

const $ = (testId, root = document) => root.querySelector(`[data-testid="${testId}"]`);

/** Shared by every tab of the origin, so all tabs act as one user and share one connection. */
function readAuth() {
  try {
    return JSON.parse(localStorage.getItem(AUTH_KEY) ?? 'null');
  } catch {
    return null;
  }
}

async function login(username, password) {
  const response = await fetch('/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message ?? `login failed (${response.status})`);
  const auth = {
    username,
    password,
    accessToken: body.accessToken,
    expiresAt: Date.now() + body.expiresIn * 1000,
  };
  localStorage.setItem(AUTH_KEY, JSON.stringify(auth));
  return auth;
}

/**
 * The library's token source. A demo can log in again with the stored password; a real app
 * would call its refresh endpoint here.
 */
async function getToken({ forceRefresh }) {
  const auth = readAuth();
  if (!auth) throw new Error('not logged in');
  if (!forceRefresh && auth.expiresAt - Date.now() > 60_000) return auth.accessToken;
  return (await login(auth.username, auth.password)).accessToken;
}

function toast(message, kind = 'info') {
  const el = document.createElement('div');
  el.className = 'toast';
  el.dataset.testid = 'toast';
  el.dataset.kind = kind;
  el.textContent = message;
  $('toasts').append(el);
  setTimeout(() => el.remove(), 8000);
}

function showLogin(error) {
  $('login-panel').hidden = false;
  $('board').hidden = true;
  $('user-box').hidden = true;
  const err = $('login-error');
  err.hidden = !error;
  err.textContent = error ?? '';
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const username = $('login-username').value;
  const password = $('login-password').value || `${username}-password`;
  try {
    await login(username, password);
    location.reload();
  } catch (e) {
    showLogin(e.message);
  }
});

$('logout').addEventListener('click', () => {
  localStorage.removeItem(AUTH_KEY);
  location.reload();
});

// Other tabs logging in or out change who this tab acts as: start over.
window.addEventListener('storage', (event) => {
  if (event.key !== AUTH_KEY) return;
  const before = event.oldValue ? JSON.parse(event.oldValue).username : null;
  const after = event.newValue ? JSON.parse(event.newValue).username : null;
  if (before !== after) location.reload();
});

function start(auth) {
  $('login-panel').hidden = true;
  $('board').hidden = false;
  $('user-box').hidden = false;
  $('current-user').textContent = auth.username;

  const client = createRealtimeClient({
    getToken,
    transport: new URLSearchParams(location.search).get('transport') ?? 'auto',
    // One connection per user and browser: tabs of another user must not share it.
    channelName: `realtime-demo:${auth.username}`,
  });
  const demo = { client, applied: [], live: null };
  window.demo = demo;

  const roleBadge = $('role-badge');
  client.on('role', ({ role }) => {
    roleBadge.textContent = role;
    roleBadge.dataset.role = role;
  });
  const connectionBadge = $('connection-badge');
  client.on('state', ({ state, transport }) => {
    connectionBadge.dataset.state = state;
    connectionBadge.textContent = state === 'open' && transport ? `open · ${transport}` : state;
  });
  const networkBadge = $('network-badge');
  const showNetwork = () => {
    networkBadge.dataset.online = String(navigator.onLine);
    networkBadge.textContent = navigator.onLine ? 'online' : 'offline';
  };
  window.addEventListener('online', showNetwork);
  window.addEventListener('offline', showNetwork);
  showNetwork();

  client.on('conflict', ({ documentId, strategy, resolved }) => {
    const title = resolved?.title ? `“${resolved.title}”` : documentId.slice(0, 8);
    toast(`conflict on task ${title} resolved: ${strategy}`, 'conflict');
  });
  client.on('write-error', ({ error }) => toast(`not saved: ${error.message}`, 'error'));
  client.on('error', (error) => toast(`connection stopped: ${error.message}`, 'error'));

  const strategySelect = $('conflict-strategy');
  strategySelect.value = localStorage.getItem(STRATEGY_KEY) ?? 'server-wins';
  const tasks = () =>
    client.collection('tasks', {
      conflict: strategySelect.value === 'merge' ? mergeTitleAndFields : strategySelect.value,
    });
  strategySelect.addEventListener('change', () => {
    localStorage.setItem(STRATEGY_KEY, strategySelect.value);
    tasks();
  });
  tasks();

  // --- live board ---
  const statusFilter = $('filter-status');
  const priorityFilter = $('filter-priority');
  const subscriptionStatus = $('subscription-status');

  function subscribe() {
    demo.live?.unsubscribe();
    const filters = [];
    if (statusFilter.value) {
      filters.push({ type: 'field', field: 'status', operator: 'eq', value: statusFilter.value });
    }
    if (priorityFilter.value) {
      filters.push({
        type: 'field',
        field: 'priority',
        operator: 'gte',
        value: Number(priorityFilter.value),
      });
    }
    subscriptionStatus.dataset.status = 'loading';
    subscriptionStatus.textContent = 'loading…';
    demo.live = client.subscribe(
      { collection: 'tasks', filters, includeInitialData: true },
      {
        onData: (documents, { changes }) => {
          for (const change of changes) {
            demo.applied.push({
              seq: change.seq,
              documentId: change.documentId,
              event: change.event,
            });
          }
          render(documents, changes);
        },
        onStatus: (status) => {
          subscriptionStatus.dataset.status = status;
          subscriptionStatus.textContent = status === 'live' ? 'live' : `${status}…`;
        },
        onError: (error) => toast(`subscription: ${error.message}`, 'error'),
      },
    );
  }
  statusFilter.addEventListener('change', subscribe);
  priorityFilter.addEventListener('change', subscribe);

  const template = document.getElementById('task-template');
  const cards = new Map();

  function card(task) {
    let el = cards.get(task.id);
    if (el) return el;
    el = template.content.firstElementChild.cloneNode(true);
    el.dataset.taskId = task.id;
    const title = $('task-title', el);
    const commitTitle = () => {
      const current = cards.get(el.dataset.taskId)?.task;
      const value = title.value.trim();
      if (!current || !value || value === current.title) {
        title.value = current?.title ?? '';
        return;
      }
      write(current, { title: value });
    };
    title.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') title.blur();
      if (event.key === 'Escape') {
        title.value = el.task.title;
        title.blur();
      }
    });
    title.addEventListener('blur', commitTitle);
    $('task-status', el).addEventListener('change', (event) =>
      write(el.task, { status: event.target.value }),
    );
    $('task-priority', el).addEventListener('change', (event) =>
      write(el.task, { priority: Number(event.target.value) }),
    );
    cards.set(task.id, el);
    return el;
  }

  function write(task, patch) {
    tasks()
      .update(task.id, patch, { version: task.version })
      .catch(() => undefined); // reported by the 'write-error' event
  }

  function render(documents, changes = []) {
    const changed = new Set(changes.map((c) => c.documentId));
    const pendingIds = new Set(client.pendingWrites.map((w) => w.documentId));
    const sorted = [...documents].sort(
      (a, b) => (b.priority ?? 0) - (a.priority ?? 0) || String(a.title).localeCompare(b.title),
    );
    const seen = new Set();
    const counts = { todo: 0, doing: 0, done: 0 };
    for (const task of sorted) {
      const status = STATUSES.includes(task.status) ? task.status : 'todo';
      counts[status]++;
      seen.add(task.id);
      const el = card(task);
      el.task = task;
      el.dataset.status = status;
      el.dataset.version = String(task.version ?? '');
      el.dataset.pending = String(pendingIds.has(task.id));
      const title = $('task-title', el);
      if (document.activeElement !== title) title.value = task.title ?? '';
      $('task-status', el).value = status;
      $('task-priority', el).value = String(task.priority ?? 3);
      const label = $('task-priority-label', el);
      label.textContent = `P${task.priority ?? '?'}`;
      label.dataset.priority = String(task.priority ?? '');
      $('task-assignee', el).textContent = task.assigneeId ? `@${task.assigneeId}` : '';
      $('task-version', el).textContent = task.version ? `v${task.version}` : 'unsaved';
      $(`column-${status}`).querySelector('.tasks').append(el);
      if (changed.has(task.id)) {
        el.classList.add('flash');
        setTimeout(() => el.classList.remove('flash'), 600);
      }
    }
    for (const [id, el] of cards) {
      if (!seen.has(id)) {
        el.remove();
        cards.delete(id);
      }
    }
    for (const status of STATUSES) $(`count-${status}`).textContent = String(counts[status]);
    const pending = client.pendingWrites.length;
    const pendingBadge = $('pending-badge');
    pendingBadge.hidden = pending === 0;
    pendingBadge.dataset.count = String(pending);
    pendingBadge.textContent = `${pending} pending`;
  }

  // --- new tasks ---
  const projectSelect = $('new-task-project');
  async function loadProjects() {
    const response = await fetch('/api/projects', {
      headers: { authorization: `Bearer ${await getToken({ forceRefresh: false })}` },
    });
    const { items = [] } = response.ok ? await response.json() : {};
    projectSelect.replaceChildren(
      ...items.map((project) => {
        const option = document.createElement('option');
        option.value = project.id;
        option.textContent = project.name;
        // A task takes its project's department: admins have none of their own.
        option.dataset.department = project.department ?? '';
        return option;
      }),
    );
    $('no-projects').hidden = items.length > 0;
    $('new-task-submit').disabled = items.length === 0;
  }
  $('create-project').addEventListener('click', async () => {
    await fetch('/api/projects', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${await getToken({ forceRefresh: false })}`,
      },
      body: JSON.stringify({ name: `${auth.username}'s project` }),
    });
    await loadProjects();
  });
  $('new-task-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.target;
    const title = form.title.value.trim();
    if (!title || !projectSelect.value) return;
    const department = projectSelect.selectedOptions[0]?.dataset.department;
    tasks()
      .create({
        title,
        projectId: projectSelect.value,
        priority: Number(form.priority.value),
        ...(department ? { department } : {}),
      })
      .catch(() => undefined);
    form.title.value = '';
  });

  subscribe();
  void loadProjects().catch((e) => toast(`projects: ${e.message}`, 'error'));
}

/**
 * The demo's merge: the client's title and status win unless the server changed the same
 * field since the edit was made; everything else comes from the server.
 */
function mergeTitleAndFields(base, local, server) {
  const merged = { ...server };
  for (const field of ['title', 'status', 'priority']) {
    const mine = JSON.stringify(local[field]) !== JSON.stringify(base?.[field]);
    const theirs = JSON.stringify(server[field]) !== JSON.stringify(base?.[field]);
    if (mine && !theirs) merged[field] = local[field];
  }
  return merged;
}

const auth = readAuth();
if (auth?.accessToken) start(auth);
else showLogin();
