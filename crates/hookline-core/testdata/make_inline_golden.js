// Golden vectors for the "inline" provider's canonical JSON signature
// (crates/hookline-core/src/canonical_json.rs). Node is the reference: the
// provider signs HMAC-SHA1 over JSON.stringify(sortDeep(JSON.parse(body))).
//
// Regenerate from the repository root with:
//   node crates/hookline-core/testdata/make_inline_golden.js > crates/hookline-core/testdata/inline_golden.json
'use strict';

const crypto = require('crypto');

const SECRET = 'inline-test-secret';

const sortDeep = v => Array.isArray(v) ? v.map(sortDeep)
  : v !== null && typeof v === 'object'
    ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sortDeep(v[k])])) : v;

// Bodies are raw JSON text; String.raw keeps JSON escapes such as \n as typed.
const LS = '\u2028';
const PS = '\u2029';

const cases = [
  ['inline_example', String.raw`{"timestamp":1524181344796,"events":[{"type":"order-pickedup","timestamp":1524181344796,"data":{"id":"o1","serial":"A-1","order":{"total":880,"currency":"TWD","items":[{"itemId":"5705","quantity":1,"price":880,"modifierFor":null,"name":{"en":"Sample Meal Set","zh-tw":"範例套餐"},"modifiers":[{"itemId":"5030","modifierName":{"zh-tw":"ENTRÉE 前菜"},"parentItemId":5705,"quantity":1.2}]}],"state":"pickedup","delivery":{"address":{"line1":"x","lat":25.0766335,"lng":121.5270664}}}}}]}`],
  ['inline_example_pretty', `{
  "timestamp": 1524181344796,
  "events": [
    {
      "type": "order-pickedup",
      "timestamp": 1524181344796,
      "data": {
        "id": "o1",
        "serial": "A-1",
        "order": {
          "total": 880,
          "currency": "TWD",
          "items": [
            {
              "itemId": "5705",
              "quantity": 1,
              "price": 880,
              "modifierFor": null,
              "name": { "en": "Sample Meal Set", "zh-tw": "範例套餐" },
              "modifiers": [
                {
                  "itemId": "5030",
                  "modifierName": { "zh-tw": "ENTRÉE 前菜" },
                  "parentItemId": 5705,
                  "quantity": 1.2
                }
              ]
            }
          ],
          "state": "pickedup",
          "delivery": { "address": { "line1": "x", "lat": 25.0766335, "lng": 121.5270664 } }
        }
      }
    }
  ]
}
`],
  ['pretty_tabs_crlf', '{\r\n\t"b" :\t[ 1 , 2 ,\r\n 3 ] ,\r\n\t"a" : { "y" : null , "x" : true }\r\n}\r\n'],
  ['unicode_values', '{"ja":"日本語","emoji":"😀👍🏽👨\u200D👩\u200D👧","accent":"ENTRÉE","escaped_emoji":"\\ud83d\\ude00","escaped_e":"caf\\u00e9","bmp_private":"\uE000\uFFFF","nbsp":"a\u00A0b","bom":"\\ufeff","raw_bom":"\uFEFF"}'],
  ['emoji_and_astral_keys', '{"😀":1,"\uE000":2,"\uFFFF":3,"\u{10000}":4,"z":5,"é":6,"ア":7,"\\ud83d\\ude01":8,"\\ue001":9,"\uD7FF":10}'],
  ['astral_vs_private_use_keys', '{"\uE000":"pua","\u{1F600}":"grin","\uFFFD":"replacement","\u{10FFFF}":"max","\uFB01":"fi"}'],
  ['integer_like_keys', String.raw`{"a":0,"10":1,"2":2,"1":3,"01":4,"-1":5,"4294967295":6,"4294967294":7,"0":8,"1.0":9,"00":10,"4294967296":11," 1":12,"":13,"B":14,"b":15}`],
  ['nested', String.raw`{"z":{"y":{"x":[{"b":1,"a":[{"d":[],"c":{}}]}]},"a":[[[]],[{}],[[{"k":{"2":"two","1":"one"}}]]]},"m":[3,{"b":null,"a":false}]}`],
  ['numbers_float_forms', String.raw`{"one_point_zero":1.0,"e21":1e21,"e20":1e20,"big":123456789012345678901234,"micro":0.000001,"e_minus7":1e-7,"neg_zero":-0,"neg_zero_float":-0.0,"lat":25.0766335,"lng":121.5270664,"min_subnormal":5e-324,"beyond_2_53":9007199254740993,"upper_E":1E+2,"exp_minus":12.5e-1,"quantity":1.2,"point_one":0.1,"third":0.3333333333333333}`],
  ['numbers_array', String.raw`[1.0,1e21,1e20,123456789012345678901234,0.000001,1e-7,-0,-0.0,25.0766335,121.5270664,5e-324,9007199254740993,-9007199254740993,18446744073709551615,18446744073709551616,-9223372036854775808,-9223372036854775809,1.7976931348623157e308,2.2250738585072014e-308,1e-400,-1e-400,0e999,100,-1.5e300,123.456e5,0.1e1]`],
  ['duplicate_keys', String.raw`{"a":1,"b":2,"a":3,"c":{"x":1,"x":{"y":2}},"b":[1]}`],
  ['control_chars_and_escapes', String.raw`{"q":"say \"hi\"","bs":"back\\slash","slash":"a\/b","ctl":"\b\f\n\r\t","nul":"\u0000","low":"\u0001\u001f\u000b\u0010","del":"\u007f","mixed":"tab\there\nnew","key\nline":1,"\"quoted\"":2}`],
  ['line_separators', '{"ls":"a' + LS + 'b","ps":"c' + PS + 'd","escaped":"\\u2028\\u2029","k' + LS + '":true}'],
  ['empty_object', '{}'],
  ['empty_array', '[]'],
  ['empty_containers_nested', ' { "o" : { } , "a" : [ ] , "ao" : [ { } , [ ] ] } '],
  ['literals', String.raw`{"n":null,"t":true,"f":false,"arr":[null,true,false]}`],
  ['top_level_array', String.raw`[{"b":2,"a":1},"x",3.0,null]`],
  ['top_level_string', String.raw`"hello \u00e9 😀"`],
  ['top_level_number', '  1.50  '],
  ['top_level_exponent', '1e21'],
  ['top_level_null', 'null'],
  ['top_level_true', '\ntrue\n'],
  ['proto_key', String.raw`{"__proto__":{"b":1,"a":2},"constructor":"c","toString":0}`],
];

const out = cases.map(([name, body]) => {
  const canonical = JSON.stringify(sortDeep(JSON.parse(body)));
  const hmac_sha1_hex = crypto.createHmac('sha1', SECRET).update(canonical).digest('hex');
  return { name, body, canonical, hmac_sha1_hex };
});

process.stdout.write(JSON.stringify(out, null, 2) + '\n');
