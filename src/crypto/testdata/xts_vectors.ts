/**
 * AES-256-XTS known answers, written out from the published standards:
 * IEEE Std 1619-2007 Annex B (vectors 10, 11 and 14: the 256-bit-key
 * vectors with 512-byte data units) and NIST CAVP XTSGenAES256.rsp, in both
 * of its forms: "tweak value input - 128 hex str" (a 128-bit tweak) and
 * "data unit seq no" (a small data-unit number); DataUnitLen 256 and 384
 * bits. 384-bit (48-byte) data units are beyond the XtsEngine contract
 * (powers of two), so the suite runs those only through the WASM kernel.
 * Used by both engines' tests.
 * @module
 */
import { fromHex } from "../../testing/xts_reference.ts";

export { fromHex, toHex } from "../../testing/xts_reference.ts";

/** One vector: `tweak` is the 16-byte little-endian data-unit number. */
export interface XtsVector {
  name: string;
  key: string;
  tweak: string;
  dataUnit: number;
  plaintext: string;
  ciphertext: string;
}

const IEEE_KEY = "2718281828459045235360287471352662497757247093699959574966967627" +
  "3141592653589793238462643383279502884197169399375105820974944592";

/** IEEE 1619 vectors 10-14 encrypt 00 01 .. ff 00 01 .. ff. */
const IEEE_PLAINTEXT = Array.from(
  { length: 512 },
  (_, i) => (i % 256).toString(16).padStart(2, "0"),
)
  .join("");

export const XTS_VECTORS: XtsVector[] = [
  {
    name: "IEEE 1619 vector 10 (data unit 0xff)",
    key: IEEE_KEY,
    tweak: "ff000000000000000000000000000000",
    dataUnit: 512,
    plaintext: IEEE_PLAINTEXT,
    ciphertext: "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b" +
      "5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd" +
      "5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0" +
      "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca" +
      "2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0" +
      "b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f" +
      "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec" +
      "583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a" +
      "84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1" +
      "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae" +
      "9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29" +
      "a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac" +
      "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f" +
      "645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed4385" +
      "1ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa" +
      "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151",
  },
  {
    name: "IEEE 1619 vector 11 (data unit 0xffff)",
    key: IEEE_KEY,
    tweak: "ffff0000000000000000000000000000",
    dataUnit: 512,
    plaintext: IEEE_PLAINTEXT,
    ciphertext: "77a31251618a15e6b92d1d66dffe7b50b50bad552305ba0217a610688eff7e11" +
      "e1d0225438e093242d6db274fde801d4cae06f2092c728b2478559df58e837c2" +
      "469ee4a4fa794e4bbc7f39bc026e3cb72c33b0888f25b4acf56a2a9804f1ce6d" +
      "3d6e1dc6ca181d4b546179d55544aa7760c40d06741539c7e3cd9d2f6650b201" +
      "3fd0eeb8c2b8e3d8d240ccae2d4c98320a7442e1c8d75a42d6e6cfa4c2eca179" +
      "8d158c7aecdf82490f24bb9b38e108bcda12c3faf9a21141c3613b58367f922a" +
      "aa26cd22f23d708dae699ad7cb40a8ad0b6e2784973dcb605684c08b8d6998c6" +
      "9aac049921871ebb65301a4619ca80ecb485a31d744223ce8ddc2394828d6a80" +
      "470c092f5ba413c3378fa6054255c6f9df4495862bbb3287681f931b687c888a" +
      "bf844dfc8fc28331e579928cd12bd2390ae123cf03818d14dedde5c0c24c8ab0" +
      "18bfca75ca096f2d531f3d1619e785f1ada437cab92e980558b3dce1474afb75" +
      "bfedbf8ff54cb2618e0244c9ac0d3c66fb51598cd2db11f9be39791abe447c63" +
      "094f7c453b7ff87cb5bb36b7c79efb0872d17058b83b15ab0866ad8a58656c5a" +
      "7e20dbdf308b2461d97c0ec0024a2715055249cf3b478ddd4740de654f75ca68" +
      "6e0d7345c69ed50cdc2a8b332b1f8824108ac937eb050585608ee734097fc090" +
      "54fbff89eeaeea791f4a7ab1f9868294a4f9e27b42af8100cb9d59cef9645803",
  },
  {
    name: "IEEE 1619 vector 14 (data unit 0xffffffffff)",
    key: IEEE_KEY,
    tweak: "ffffffffff0000000000000000000000",
    dataUnit: 512,
    plaintext: IEEE_PLAINTEXT,
    ciphertext: "64497e5a831e4a932c09be3e5393376daa599548b816031d224bbf50a818ed23" +
      "50eae7e96087c8a0db51ad290bd00c1ac1620857635bf246c176ab463be30b80" +
      "8da548081ac847b158e1264be25bb0910bbc92647108089415d45fab1b3d2604" +
      "e8a8eff1ae4020cfa39936b66827b23f371b92200be90251e6d73c5f86de5fd4" +
      "a950781933d79a28272b782a2ec313efdfcc0628f43d744c2dc2ff3dcb66999b" +
      "50c7ca895b0c64791eeaa5f29499fb1c026f84ce5b5c72ba1083cddb5ce45434" +
      "631665c333b60b11593fb253c5179a2c8db813782a004856a1653011e93fb6d8" +
      "76c18366dd8683f53412c0c180f9c848592d593f8609ca736317d356e13e2bff" +
      "3a9f59cd9aeb19cd482593d8c46128bb32423b37a9adfb482b99453fbe25a41b" +
      "f6feb4aa0bef5ed24bf73c762978025482c13115e4015aac992e5613a3b5c2f6" +
      "85b84795cb6e9b2656d8c88157e52c42f978d8634c43d06fea928f2822e465aa" +
      "6576e9bf419384506cc3ce3c54ac1a6f67dc66f3b30191e698380bc999b05abc" +
      "e19dc0c6dcc2dd001ec535ba18deb2df1a101023108318c75dc98611a09dc48a" +
      "0acdec676fabdf222f07e026f059b672b56e5cbc8e1d21bbd867dd9272120546" +
      "81d70ea737134cdfce93b6f82ae22423274e58a0821cc5502e2d0ab4585e94de" +
      "6975be5e0b4efce51cd3e70c25a1fbbbd609d273ad5b0d59631c531f6a0a57b9",
  },
  {
    name: "NIST CAVP XTSGenAES256 COUNT=1 (256 bits)",
    key: "1ea661c58d943a0e4801e42f4b0947149e7f9f8e3e68d0c7505210bd311a0e7c" +
      "d6e13ffdf2418d8d1911c004cda58da3d619b7e2b9141e58318eea392cf41b08",
    tweak: "adf8d92627464ad2f0428e84a9f87564",
    dataUnit: 32,
    plaintext: "2eedea52cd8215e1acc647e810bbc3642e87287f8d2e57e36c0a24fbc12a202e",
    ciphertext: "cbaad0e2f6cea3f50b37f934d46a9b130b9d54f07e34f36af793e86f73c6d7db",
  },
  {
    name: "NIST CAVP XTSGenAES256 COUNT=2 (256 bits)",
    key: "e149be00177d76b7c1d85bcbb6b5054ee10b9f51cd73f59e0840628b9e7d854e" +
      "2e1c0ab0537186a2a7c314bbc5eb23b6876a26bcdbf9e6b758d1cae053c2f278",
    tweak: "0ea18818fab95289b1caab4e61349501",
    dataUnit: 32,
    plaintext: "f5f101d8e3a7681b1ddb21bd2826b24e32990bca49b39291b5369a9bca277d75",
    ciphertext: "5bf2479393cc673306fbb15e72600598e33d4d8a470727ce098730fd80afa959",
  },
  {
    name: "NIST CAVP XTSGenAES256 (256 bits, key 522499..)",
    key: "522499839449864b0f59ac861b0b8923a1e4e204f8a255febb9ef0a8078942e8" +
      "ab26a30a3bd6d14fd291efaeacd088169a6bb1218f3ffe9a482a439d2ef78628",
    tweak: "04782cd3c9161fd2eaa9e911c23af4c8",
    dataUnit: 32,
    plaintext: "1614c98391c1dece1a3d165af0101c872a31730c407b07a2bc97f8c8741e7fcb",
    ciphertext: "4d8ee472b5c9367b364cf284738ef5b490f4c131a4badc316a175f3d55d28711",
  },
  {
    name: "NIST CAVP XTSGenAES256 COUNT=101 (384 bits)",
    key: "266c336b3b01489f3267f52835fd92f674374b88b4e1ebd2d36a5f457581d9d0" +
      "42c3eef7b0b7e5137b086496b4d9e6ac658d7196a23f23f036172fdb8faee527",
    tweak: "06b209a7a22f486ecbfadb0f3137ba42",
    dataUnit: 48,
    plaintext: "ca7d65ef8d3dfad345b61ccddca1ad81de830b9e86c7b426d76cb7db766852d9" +
      "81c6b21409399d78f42cc0b33a7bbb06",
    ciphertext: "c73256870cc2f4dd57acc74b5456dbd776912a128bc1f77d72cdebbf270044b7" +
      "a43ceed29025e1e8be211fa3c3ed002d",
  },
  {
    name: "NIST CAVP XTSGenAES256 (384 bits, key ad504b..)",
    key: "ad504b85d751bfba6913b4cc79b65a62f7f39d360f35b5ec4a7e95bd9ba5f2ec" +
      "c1d77ea3c374bd4b131b078387dd555ab5b0c7e52db50612d2b53acb478a53b4",
    tweak: "e64219ede0e1c2a00ef5586ac49beb6f",
    dataUnit: 48,
    plaintext: "24cb762255b5a800f46e8060569e0553bcfe86553bcad589c7541a73acc39abd" +
      "53c40776d8e822619ea9ad77a0134cfc",
    ciphertext: "a3c6f3f382795b1087d70250db2cd3b1a162a8b6dc126061c10a84a5853f3a89" +
      "e66cdbb79ab4289bc3ead810e9c0af92",
  },
  {
    name: "NIST CAVP XTSGenAES256, data unit seq no 187 (256 bits)",
    key: "ef010ca1a3663e32534349bc0bae62232a1573348568fb9ef41768a7674f507a" +
      "727f98755397d0e0aa32f830338cc7a926c773f09e57b357cd156afbca46e1a0",
    tweak: "bb000000000000000000000000000000",
    dataUnit: 32,
    plaintext: "ed98e01770a853b49db9e6aaf88f0a41b9b56e91a5a2b11d40529254f5523e75",
    ciphertext: "ca20c55e8dc149687d2541de39c3df6300bb5a163c10ced3666b1357db8bd39d",
  },
  {
    name: "NIST CAVP XTSGenAES256, data unit seq no 78 (256 bits)",
    key: "10c9da9064e9c777e1a7bfb90e1c6e9f5472cb5add6e3bb9ff46277f76614bd5" +
      "064c5d95ae185cee9fd0d6d4d48a2294deaf230f454fa08fc9292bdf30d3ecc5",
    tweak: "4e000000000000000000000000000000",
    dataUnit: 32,
    plaintext: "a0c2e18f86d373ae57abb5906cf3aed27779d66997e8e98ffc7fe23fb87697b5",
    ciphertext: "1ef6cd636f171adb4f991ff4d9af1865158ce42607d24cd7328e8fd7996b5ee9",
  },
  {
    name: "NIST CAVP XTSGenAES256, data unit seq no 5 (384 bits)",
    key: "bf04a34622e657b6cb7fc5acde6404bd20e36e8e6cb41dae9555e7bb669262f3" +
      "9f87d4ebdf3068c987b9c18de017fa575d17b205bca4aab97e42c95c26b28235",
    tweak: "05000000000000000000000000000000",
    dataUnit: 48,
    plaintext: "dd570336bad9a4f9eb88489b9cc811020780f6be6a094832417cb2032e70ea3f" +
      "f80bbca51c97f576b8eb92ba06fc7d17",
    ciphertext: "b21ce97c9db4aafe04b16bc1eb27508481abb417585dc55a4901f029a5dcffc4" +
      "510b302fc70e2dcb75ddc7aefd714e70",
  },
  {
    name: "NIST CAVP XTSGenAES256, data unit seq no 26 (384 bits)",
    key: "8caf607277f8471ade3f4eb634138f2222fb6ae71af6d4e2bad4c7e440cadf9f" +
      "f697dd07315d37b723617fffb36d83645bc09af708810c2423d3ddb469d10425",
    tweak: "1a000000000000000000000000000000",
    dataUnit: 48,
    plaintext: "1540a5370d3b83ec938932612ac42faa52a38a2be39dd14547519757fed9b18e" +
      "b1a05577ce68632f88741d29e8042f48",
    ciphertext: "f6b2f1996c97f1d90af812ddac031c0b15d0569e0ba35b318e35e6661b7ca62d" +
      "b5591dfd86854105866191726d19d067",
  },
];

/** The tweak as a data-unit number, when it fits in a safe integer. */
export function tweakNumber(tweak: string): number | undefined {
  const b = fromHex(tweak);
  let n = 0;
  for (let i = 15; i >= 0; i--) {
    n = n * 256 + (b[i] ?? 0);
    if (n > Number.MAX_SAFE_INTEGER) return undefined;
  }
  return n;
}
