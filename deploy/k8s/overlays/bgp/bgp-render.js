#!/usr/bin/env node
/*
 * bgp-render: the BGP sidecar's init step. Runs in the retrace image (node and the `yaml`
 * package are there) so that the sidecar image needs no YAML parser.
 *
 * Reads this node's services file (RETRACE_CONFIG_DIR/services-<NODE_NAME>.yaml, else
 * services.yaml: the `retrace apply -f` document the appliance's postStart hook applies) and
 * writes into OUT_DIR:
 *   vips         the VIPs of virtual_services, one per line, unique, sorted
 *   gobgpd.toml  TEMPLATE with @ROUTER_ID@ (NODE_IP), @ADDRESS:<port>@ (retrace's address on
 *                that port, from `addresses`) and @VIP_PREFIXES@ (one prefix-list entry per VIP)
 *                replaced
 * Exits 1 with a message naming the problem (unknown port in the template, no NODE_IP, ...).
 *
 * Environment: RETRACE_CONFIG_DIR (/etc/retrace), NODE_NAME, NODE_IP, TEMPLATE
 * (/etc/retrace-bgp/gobgpd.toml), OUT_DIR (/run/bgp), RETRACE_HOME (/app: where node_modules is).
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const env = (name, dflt) => (process.env[name] !== undefined && process.env[name] !== '' ? process.env[name] : dflt);
const YAML = require(path.join(env('RETRACE_HOME', '/app'), 'node_modules', 'yaml'));

function fail(msg) {
  process.stderr.write(`bgp-render: ${msg}\n`);
  process.exit(1);
}

const IPV4 = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;

/** Reads a key spelled snake_case or lowerCamelCase (`retrace apply` accepts both). */
const get = (obj, snake) => obj?.[snake] ?? obj?.[snake.replace(/_([a-z])/g, (_, c) => c.toUpperCase())];

function servicesFile(dir, node) {
  const own = path.join(dir, `services-${node}.yaml`);
  if (node !== '' && fs.existsSync(own)) return own;
  return path.join(dir, 'services.yaml');
}

function main() {
  const dir = env('RETRACE_CONFIG_DIR', '/etc/retrace');
  const file = servicesFile(dir, env('NODE_NAME', ''));
  let doc;
  try {
    doc = YAML.parse(fs.readFileSync(file, 'utf8')) ?? {};
  } catch (e) {
    fail(`${file}: ${e.message.split('\n')[0]}`);
  }
  if ('config' in doc) doc = doc.config ?? {}; // a `retrace get-config` dump

  const vips = [...new Set((get(doc, 'virtual_services') ?? []).map((s) => s?.vip))].sort();
  vips.forEach((v) => IPV4.test(v ?? '') || fail(`${file}: virtual service VIP ${JSON.stringify(v)} is not an IPv4 address`));
  const addresses = new Map();
  for (const a of get(doc, 'addresses') ?? []) {
    if (!addresses.has(a?.port)) addresses.set(a?.port, a?.address); // the first address of a port
  }

  const template = env('TEMPLATE', '/etc/retrace-bgp/gobgpd.toml');
  let toml = fs.readFileSync(template, 'utf8');
  const routerId = env('NODE_IP', '');
  const entries = vips.map((v) => `  [[defined-sets.prefix-sets.prefix-list]]\n    ip-prefix = "${v}/32"`).join('\n');
  // Placeholders are replaced outside comments only (the template's header documents them).
  toml = toml
    .split('\n')
    .map((line) => {
      if (/^\s*#/.test(line)) return line;
      if (line.trim() === '@VIP_PREFIXES@') return entries;
      line = line.replaceAll('@ROUTER_ID@', () => {
        if (!IPV4.test(routerId)) fail(`NODE_IP ${JSON.stringify(routerId)} is not an IPv4 address`);
        return routerId;
      });
      line = line.replace(/@ADDRESS:([a-z][a-z0-9-]*)@/g, (_, port) => {
        const a = addresses.get(port);
        if (a === undefined) fail(`${template} wants the address of port "${port}", but ${file} gives it none`);
        return a;
      });
      const left = /@[A-Z_]+(:[^@\s]*)?@/.exec(line);
      if (left) fail(`${template}: unknown placeholder ${left[0]}`);
      return line;
    })
    .join('\n');

  const out = env('OUT_DIR', '/run/bgp');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'vips'), vips.map((v) => `${v}\n`).join(''));
  fs.writeFileSync(path.join(out, 'gobgpd.toml'), toml);
  if (vips.length === 0) process.stderr.write(`bgp-render: warning: ${file} has no virtual services: nothing to announce\n`);
  process.stdout.write(`bgp-render: ${file}: ${vips.length} VIP(s) -> ${out}/vips, ${out}/gobgpd.toml\n`);
}

main();
