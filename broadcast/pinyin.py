"""Chinese text to pinyin for espeak-ng's `cmn-latn-pinyin` voice, with a small built-in table.

Debian's espeak-ng `cmn` voice reads Chinese characters through an English letter reader
("请" comes out as English "king three"), so announcements are handed to the
`cmn-latn-pinyin` voice as pinyin with tone marks. The table covers the words of the
announcement templates, numbers and the usual names of a government service hall's
services and counters. It is deliberately small (no network, no big dictionary): a character
it lacks is passed through unchanged, which that voice reads with its own dictionary, and
`unknown_hanzi` lets start-up name such characters so they can be checked with
``espeak-ng -v cmn-latn-pinyin -x`` or recorded in a voice pack.

Polyphonic characters whose hall reading is not certain (行, 处, 重, 调, 长...) are left out
on purpose: espeak-ng's dictionary, which sees the neighbouring characters, does better.
"""

from __future__ import annotations

import re

# Digits as read one by one (ticket numbers: A 零 一 二) and the units of a number read as a
# number (counters: 十二号窗口).
ZH_DIGITS = "零一二三四五六七八九"

_TABLE_SOURCE = """
零líng 一yī 二èr 三sān 四sì 五wǔ 六liù 七qī 八bā 九jiǔ 十shí 百bǎi 千qiān 两liǎng 请qǐng 号hào
到dào 窗chuāng 口kǒu 办bàn 理lǐ 前qián 往wǎng 去qù 至zhì 柜guì 台tái 第dì 位wèi 您nín 好hǎo
的de5 在zài 等děng 候hòu 准zhǔn 备bèi 码mǎ 区qū 楼lóu 层céng 室shì 厅tīng 馆guǎn 座zuò 间jiān
边biān 侧cè 东dōng 西xī 南nán 北běi 左zuǒ 右yòu 上shàng 下xià 里lǐ 内nèi 外wài 旁páng 对duì
面miàn 先xiān 生shēng 女nǚ 士shì 顾gù 客kè 市shì 民mín 群qún 众zhòng 叫jiào 再zài 次cì 过guò
留liú 意yì 及jí 时shí 即jí 刻kè 马mǎ 综zōng 合hé 服fú 务wù 业yè 企qǐ 开kāi 不bù 动dòng 产chǎn
登dēng 记jì 社shè 保bǎo 医yī 税shuì 公gōng 积jī 金jīn 户hù 籍jí 证zhèng 照zhào 婚hūn 姻yīn
政zhèng 府fǔ 审shěn 批pī 咨zī 询xún 受shòu 领lǐng 取qǔ 交jiāo 费fèi 缴jiǎo 人rén 才cái 劳láo
就jiù 失shī 车chē 驾jià 出chū 入rù 境jìng 水shuǐ 电diàn 燃rán 气qì 商shāng 注zhù 册cè 工gōng
程chéng 建jiàn 设shè 规guī 划huà 环huán 评píng 价jià 消xiāo 防fáng 卫wèi 健jiàn 康kāng 食shí
品pǐn 药yào 场chǎng 监jiān 管guǎn 房fáng 地dì 土tǔ 资zī 源yuán 自zì 然rán 助zhù 老lǎo 年nián
残cán 疾jí 军jūn 优yōu 预yù 约yuē 专zhuān 用yòng 部bù 门mén 局jú 科kē 所suǒ 站zhàn 中zhōng 心xīn
城chéng 乡xiāng 住zhù 宅zhái 档dàng 案àn 查chá 补bǔ 换huàn 新xīn 申shēn 报bào 销xiāo 变biàn 个gè
体tǐ 营yíng 执zhí 许xǔ 可kě 法fǎ 律lǜ 援yuán 解jiě 投tóu 诉sù 见jiàn 贷dài 款kuǎn 退tuì 休xiū
养yǎng 疗liáo 险xiǎn 育yù 教jiào 学xué 校xiào 儿ér 童tóng 国guó 港gǎng 澳ào 签qiān 护hù 身shēn
份fèn 居jū 迁qiān 移yí 事shì 项xiàng 立lì 收shōu 件jiàn 发fā 放fàng 网wǎng 材cái 料liào 复fù
印yìn 拍pāi 票piào 据jù 小xiǎo 微wēi 型xíng 贸mào 易yì 农nóng 林lín 渔yú 牧mù 通tōng 运yùn 输shū
文wén 化huà 旅lǚ 游yóu 应yìng 急jí 安ān 全quán 特tè 殊shū 绿lǜ 色sè 道dào 爱ài 属shǔ 谢xiè
"""

PINYIN: dict[str, str] = {entry[0]: entry[1:] for entry in _TABLE_SOURCE.split() if len(entry) > 1}
"""Character -> pinyin syllable with a tone mark (de5: neutral tone, as the voice wants)."""

_HANZI = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_DIGITS = re.compile(r"\d+")
# Chinese and Western punctuation both become a pause (a comma) for espeak-ng.
_PAUSE = re.compile(r"[，。、！？；：,.!?;:·…—\-()（）\[\]【】「」『』《》\"“”'‘’]+")


def zh_number(n: int) -> list[str]:
    """A number as said in Mandarin, one character per syllable: 3 -> 三, 12 -> 十二,
    20 -> 二十, 105 -> 一百零五, 110 -> 一百一十. Counters are said this way (十二号窗口),
    unlike ticket numbers, which are read digit by digit."""
    if n < 0:
        raise ValueError(f"no reading for a negative number: {n}")
    if n < 10:
        return [ZH_DIGITS[n]]
    if n < 20:  # 十, 十二: "一十二" is not what anybody says
        return ["十"] + ([ZH_DIGITS[n % 10]] if n % 10 else [])
    if n < 100:
        return [ZH_DIGITS[n // 10], "十"] + ([ZH_DIGITS[n % 10]] if n % 10 else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        words = [ZH_DIGITS[hundreds], "百"]
        if rest == 0:
            return words
        if rest < 10:
            return [*words, "零", ZH_DIGITS[rest]]
        if rest < 20:  # 一百一十二: after 百 the 一 of the tens is said
            return [*words, "一", *zh_number(rest)]
        return words + zh_number(rest)
    # Beyond what a hall counts; digit by digit is still understood.
    return [ZH_DIGITS[int(d)] for d in str(n)]


def to_pinyin(text: str) -> str:
    """Chinese text -> the pinyin the `cmn-latn-pinyin` voice reads.

    Known characters become syllables with tone marks, runs of digits are read as numbers
    (3号窗口 -> sān hào chuāng kǒu), punctuation becomes a comma (a pause), Latin letters and
    unknown characters are kept as they are (the voice reads letters the Chinese way and
    unknown characters through its own dictionary).
    """
    out: list[str] = []
    for token in re.findall(r"\d+|[A-Za-z]+|\s+|.", text):
        if token.isspace():
            continue
        if token.isdigit():
            out.extend(PINYIN[ch] for ch in zh_number(int(token)))
        elif token in PINYIN:
            out.append(PINYIN[token])
        elif _PAUSE.fullmatch(token):
            if out and out[-1] != ",":
                out.append(",")
        else:
            out.append(token)
    while out and out[-1] == ",":
        out.pop()
    return " ".join(out).replace(" ,", ",")


def unknown_hanzi(text: str) -> list[str]:
    """The Chinese characters of `text` the table lacks, in order of first appearance."""
    seen: dict[str, None] = {}
    for ch in _HANZI.findall(_DIGITS.sub("", text)):
        if ch not in PINYIN:
            seen.setdefault(ch, None)
    return list(seen)
