// Aggregate the trips CSV by zone into zones.json and publish how many zones there are.
const fs = require("fs");
const [input, output] = process.argv.slice(2);
const [, ...lines] = fs.readFileSync(input, "utf8").trim().split("\n");
const byZone = {};
for (const line of lines) {
  const [, zone, fare] = line.split(",");
  byZone[zone] = byZone[zone] || { zone, trips: 0, fare_cents: 0 };
  byZone[zone].trips += 1;
  byZone[zone].fare_cents += Number(fare);
}
const zones = Object.values(byZone).sort((a, b) => a.zone.localeCompare(b.zone));
fs.writeFileSync(output, JSON.stringify(zones, null, 2));
console.log(`aggregated ${lines.length} trips into ${zones.length} zones`);
console.log("::" + JSON.stringify({ outputs: { zones: zones.length, trips: lines.length } }) + "::");
