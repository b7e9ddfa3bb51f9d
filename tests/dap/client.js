// Drives `midrun dap` with @vscode/debugadapter-testsupport's DebugClient (the client VS
// Code's own adapters are tested with): `node client.js SCENARIO CONFIG_JSON`. Each
// scenario asserts as it goes and prints one JSON line of what it saw; a failed
// assertion exits non-zero with the reason.
'use strict';
const assert = require('node:assert/strict');
const { DebugClient } = require('@vscode/debugadapter-testsupport');

const [, , scenario, configText] = process.argv;
const config = JSON.parse(configText);
const seen = { outputs: [], stops: [] };

function client() {
  const dc = new DebugClient(config.python, config.adapter, 'midrun', { cwd: config.cwd }, true);
  dc.defaultTimeout = config.timeout_ms || 60000;
  dc.on('output', (e) => {
    if (e.body.category === 'console') seen.outputs.push(e.body.output.trimEnd());
  });
  return dc;
}

async function start(dc, args, breakpoints) {
  // initialize + launch, then (after `initialized`) the breakpoints and configurationDone
  const configured = dc.waitForEvent('initialized').then(async () => {
    const answers = breakpoints ? await breakpoints(dc) : undefined;
    await dc.configurationDoneRequest();
    return answers;
  });
  const [answers] = await Promise.all([configured, dc.launch(args)]);
  return answers;
}

async function stopOrEnd(dc) {
  // the next stop ({reason, name}) or the end ({reason: 'terminated'})
  const stopped = dc.waitForEvent('stopped').then(async (e) => {
    const trace = await dc.stackTraceRequest({ threadId: 1 });
    const stop = { reason: e.body.reason, name: trace.body.stackFrames[0].name,
                   hits: e.body.hitBreakpointIds, text: e.body.text,
                   frames: trace.body.stackFrames };
    seen.stops.push({ reason: stop.reason, name: stop.name });
    return stop;
  });
  const ended = dc.waitForEvent('terminated').then(() => ({ reason: 'terminated' }));
  return Promise.race([stopped, ended]);
}

async function variables(dc, ref) {
  const answer = await dc.variablesRequest({ variablesReference: ref });
  return Object.fromEntries(answer.body.variables.map((v) => [v.name, v]));
}

async function scopes(dc) {
  const answer = await dc.scopesRequest({ frameId: 1 });
  return Object.fromEntries(answer.body.scopes.map((s) => [s.name, s.variablesReference]));
}

async function fails(promise, pattern) {
  try {
    await promise;
  } catch (err) {
    assert.match(String(err.message), pattern);
    return String(err.message);
  }
  assert.fail(`expected an error matching ${pattern}`);
}

const scenarios = {
  // A StateGraph stepped from its entry to its end: next, stepIn and stepOut.
  async stepping() {
    const dc = client();
    await dc.start();
    const firstStop = stopOrEnd(dc);
    await start(dc, { program: config.program, stopOnEntry: true });
    const moves = ['stepIn', 'next', 'stepOut', 'next', 'next', 'next', 'next', 'next', 'next',
                   'next'];
    let stop = await firstStop;
    assert.equal(stop.reason, 'entry');
    assert.equal(stop.frames[0].source.path, config.program);
    for (const move of moves) {
      // listen first: the event can come in the same read as the response
      const next = stopOrEnd(dc);
      await dc[`${move}Request`]({ threadId: 1 });
      stop = await next;
      if (stop.reason === 'terminated') break;
    }
    await dc.stop();
    return {};
  },

  // Every breakpoint kind: conditions, hit counts, a line of a node function as a
  // logpoint, node errors; unknown nodes and malformed conditions unverified.
  async breakpoints() {
    const dc = client();
    await dc.start();
    const exited = dc.waitForEvent('exited');
    const firstStop = stopOrEnd(dc);
    const answers = await start(dc, { program: config.program, inputs: config.inputs },
      async (c) => ({
        functions: (await c.setFunctionBreakpointsRequest({ breakpoints: [
          { name: 'score', hitCondition: '>= 2' },
          { name: 'revise', condition: 'round >= 1' },
          { name: 'nope' },
          { name: 'draft', condition: 'round >' },
        ] })).body.breakpoints,
        lines: (await c.setBreakpointsRequest({ source: { path: config.program },
          breakpoints: [{ line: config.revise_line, logMessage: 'revising round {round}' },
                        { line: 1 }] })).body.breakpoints,
        errors: (await c.setExceptionBreakpointsRequest({ filters: ['node_errors'] }))
          .body.breakpoints,
      }));
    assert.deepEqual(answers.functions.map((b) => b.verified), [true, true, false, false]);
    assert.match(answers.functions[2].message, /No node 'nope'/);
    assert.match(answers.functions[3].message, /not valid/);
    assert.deepEqual(answers.lines.map((b) => b.verified), [true, false]);
    const stops = [];
    let next = firstStop;
    for (;;) {
      const stop = await next;
      if (stop.reason === 'terminated') break;
      stops.push(stop);
      next = stopOrEnd(dc);
      await dc.continueRequest({ threadId: 1 });
    }
    const code = (await exited).body.exitCode;
    await dc.stop();
    return { answers, stops: stops.map((s) => ({ reason: s.reason, name: s.name, hits: s.hits,
                                                  text: s.text })), exitCode: code };
  },

  // A workflow held at a sampler step: a tensor's variables, evaluate, setVariable (a
  // mid-run edit from the next step), then on to the image.
  async workflow() {
    const dc = client();
    await dc.start();
    const firstStop = stopOrEnd(dc);
    const answers = await start(dc, { program: config.program, output_dir: config.output_dir,
                                      device: 'cpu' },
      async (c) => (await c.setFunctionBreakpointsRequest({ breakpoints: [
        { name: 'KSampler@2' }] })).body.breakpoints);
    assert.equal(answers[0].verified, true);
    const stop = await firstStop;
    assert.equal(stop.reason, 'function breakpoint');
    assert.deepEqual(stop.hits, [answers[0].id]);
    const found = await scopes(dc);
    assert.deepEqual(Object.keys(found), ['Inputs', 'Sampler']);
    const inputs = await variables(dc, found.Inputs);
    const sampler = await variables(dc, found.Sampler);
    const latentImage = await variables(dc, inputs.latent_image.variablesReference);
    const inner = await variables(dc, sampler.sampler.variablesReference);
    const tensor = inner.x; // the latent being denoised
    const parts = await variables(dc, tensor.variablesReference);
    const evaluated = {};
    for (const expression of ['cfg * 2', 'step', 'inputs.steps - step', 'len(positive)']) {
      evaluated[expression] = (await dc.evaluateRequest({ expression, frameId: 1,
                                                          context: 'hover' })).body.result;
    }
    const refused = await fails(dc.evaluateRequest({ expression: "__import__('os')" }),
                                /not allowed/);
    let edit = null;
    if (config.edit) {
      const again = dc.waitForEvent('stopped');
      const answer = await dc.setVariableRequest({ variablesReference: found.Inputs,
                                                   name: 'cfg', value: config.edit });
      const held = await again;
      const after = await dc.evaluateRequest({ expression: 'cfg', frameId: 1 });
      const badAnswer = await fails(dc.setVariableRequest({
        variablesReference: (await scopes(dc)).Inputs, name: 'steps', value: '"many"' }),
        /steps/);
      edit = { value: answer.body.value, reason: held.body.reason,
               where: held.body.description, cfg: after.body.result, refused: badAnswer };
    }
    const ending = stopOrEnd(dc);
    await dc.continueRequest({ threadId: 1 });
    const end = await ending;
    assert.equal(end.reason, 'terminated');
    await dc.stop();
    return { frame: stop.frames[0], inputs: { cfg: inputs.cfg.value, seed: inputs.seed.value },
             inputTensor: latentImage.samples.value,
             tensor: tensor.value, tensorParts: Object.keys(parts), evaluated, refused, edit };
  },

  // Requests that are wrong get error responses naming the fix; the session goes on.
  async errors() {
    const dc = client();
    await dc.start();
    await dc.initializeRequest({ adapterID: 'midrun' });
    const messages = {
      launchWithout: await fails(dc.launchRequest({}), /needs 'program'/),
      launchMissing: await fails(dc.launchRequest({ program: '/nonexistent/graph.py' }),
                                 /No program/),
      breakpointsFirst: await fails(dc.setFunctionBreakpointsRequest({ breakpoints: [] }),
                                    /send launch first/),
      unknown: await fails(dc.customRequest('frobnicate', {}), /does not support 'frobnicate'/),
    };
    const entry = stopOrEnd(dc);
    await start(dc, { program: config.program, stopOnEntry: true });
    await entry;
    messages.noSource = await fails(dc.setBreakpointsRequest({ breakpoints: [{ line: 3 }] }),
                                    /needs 'source'/);
    messages.badRef = await fails(dc.variablesRequest({ variablesReference: 9999 }),
                                  /No variables under reference/);
    messages.stateEdit = await fails(dc.setVariableRequest({
      variablesReference: (await scopes(dc)).State, name: 'topic', value: '"x"' }),
      /Only a held workflow node's inputs/);
    const done = dc.waitForEvent('terminated');
    await dc.continueRequest({ threadId: 1 });
    await done;
    messages.afterEnd = await fails(dc.nextRequest({ threadId: 1 }), /not paused/);
    await dc.stop();
    return { messages };
  },

  // A job on a running server: queued while the pipeline is paused, attached, stopped
  // at a sampler step by a function breakpoint, edited through setVariable, continued.
  async attach() {
    const post = async (path, body) => {
      const answer = await fetch(config.server + path, { method: 'POST', body: JSON.stringify(body || {}),
        headers: { 'content-type': 'application/json' } });
      const text = await answer.text();
      assert.ok(answer.ok, `${path}: ${answer.status} ${text}`);
      return JSON.parse(text);
    };
    await post('/api/pipeline/pause');
    const job = (await post('/prompt', { prompt: config.prompt })).prompt_id;
    const dc = client();
    await dc.start();
    const configured = dc.waitForEvent('initialized').then(async () => {
      const set = await dc.setFunctionBreakpointsRequest({ breakpoints: [{ name: 'KSampler@3' }] });
      await dc.configurationDoneRequest();
      return set.body.breakpoints;
    });
    await dc.initializeRequest({ adapterID: 'midrun' });
    await dc.attachRequest({ server: config.server, job });
    const breakpoints = await configured;
    const firstStop = stopOrEnd(dc);
    await post('/api/pipeline/resume');
    const stop = await firstStop;
    const found = await scopes(dc);
    const inputs = await variables(dc, found.Inputs);
    const before = (await dc.evaluateRequest({ expression: 'cfg * 2', frameId: 1 })).body.result;
    const set = await dc.setVariableRequest({ variablesReference: found.Inputs, name: 'cfg',
                                              value: config.edit });
    const refused = await fails(dc.setVariableRequest({ variablesReference: found.Inputs,
                                                        name: 'steps', value: '"many"' }), /steps/);
    const ending = stopOrEnd(dc);
    await dc.continueRequest({ threadId: 1 });
    const end = await ending;
    await dc.disconnectRequest({});
    return { job, breakpoints, stop: { reason: stop.reason, name: stop.name, hits: stop.hits },
             cfg: inputs.cfg.value, before, set: set.body.value, refused, end: end.reason };
  },

  // A running graph: a condition that passes a limit of the evaluator disables its
  // breakpoint (a `breakpoint` event), pause stops the run, terminate ends it.
  async control() {
    const dc = client();
    await dc.start();
    const disabled = dc.waitForEvent('breakpoint');
    const exited = dc.waitForEvent('exited');
    const answers = await start(dc, { program: config.program },
      async (c) => (await c.setFunctionBreakpointsRequest({ breakpoints: [
        { name: 'tick', condition: 'n ** 1000000 < 0' }] })).body.breakpoints);
    const changed = (await disabled).body;
    assert.equal(changed.breakpoint.id, answers[0].id);
    const stopped = dc.waitForEvent('stopped');
    await dc.pauseRequest({ threadId: 1 });
    const stop = (await stopped).body;
    const n = Number((await dc.evaluateRequest({ expression: 'n', frameId: 1 })).body.result);
    const ended = dc.waitForEvent('terminated');
    await dc.terminateRequest({});
    await ended;
    const code = (await exited).body.exitCode;
    await dc.stop();
    return { changed, reason: stop.reason, n, exitCode: code };
  },

  // The same adapter over TCP (`midrun dap --port N`).
  async tcp() {
    const dc = client();
    await dc.start(config.port);
    const entry = stopOrEnd(dc);
    await start(dc, { program: config.program, stopOnEntry: true });
    const stop = await entry;
    const ending = stopOrEnd(dc);
    await dc.continueRequest({ threadId: 1 });
    const end = await ending;
    await dc.disconnectRequest({});
    return { first: stop.reason, end: end.reason };
  },
};

scenarios[scenario]()
  .then((result) => {
    console.log(JSON.stringify({ ok: true, ...seen, ...result }));
    process.exit(0);
  })
  .catch((err) => {
    console.log(JSON.stringify({ ok: false, error: String(err && err.stack || err), ...seen }));
    process.exit(1);
  });
