# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""A small built-in English word list for synthetic pages, and a deterministic train / held-out split of it."""

import zlib


_WORDS = """
about above account act action add address after again against age agent ago agree air all allow almost alone
along already also always amount analysis and animal annual another answer any apply april area argue arm around
arrive art article ask assume at attack audience author available avoid away baby back bad bag balance ball bank
bar base basic be beat beautiful because become bed before begin behind believe benefit best better between beyond
big bill billion bit black blood blue board body book born both box boy break bring brother budget build building
business but buy by call camera campaign can cancer capital car card care career carry case catch cause cell center
central century certain chair challenge chance change charge check child choice choose church city claim class
clear close coach cold collection college color come common company compare computer concern condition consider
contain continue contract control cost could country couple course court cover create credit crime cultural
culture cup current customer cut daily dark data date daughter day dead deal death debate debit decade decide
decision deep defense degree delivery democrat depend describe design detail determine develop device difference
different difficult dinner direction director discount discover discuss disease do doctor dog door down draw dream
drive drop drug due during each early east easy eat economic economy edge education effect effort eight either
election else employee end energy enjoy enough enter entire environment equal establish estimate even evening
event ever every evidence exactly example executive exist expect expense experience expert explain eye face fact
factor fail fall family far fast father fear federal fee feel field fight figure file fill film final finally
financial find fine finger finish fire firm first fish five floor fly focus follow food foot for force foreign
forget form former forward four free friend from front full fund future game garden gas general generation get
girl give glass goal good government great green ground group grow growth guess gun guy hair half hand hang happen
happy hard have head health hear heart heat heavy help her here herself high him himself his history hit hold home
hope hospital hot hotel hour house how however huge human hundred husband idea identify if image imagine impact
important improve include income increase indeed indicate individual industry information inside instead
institution interest interview into invoice issue item its itself job join just keep key kid kill kind kitchen
know knowledge land language large last late later laugh law lawyer lay lead leader learn least leave left leg
legal less let letter level lie life light like likely line list listen little live local long look lose loss lot
love low machine magazine main maintain major make man manage manager many market marriage material matter may
maybe measure media medical meet meeting member memory mention message method middle might military million mind
minute miss mission model modern moment money month more morning most mother mouth move movie much music must
myself name nation national natural nature near nearly necessary need net network never new news newspaper next
nice night nine none nor north note nothing notice now number occur of off offer office officer official often oil
old on once one only onto open operation opportunity option or order organization other others our out outside
over own owner page pain painting paper parent part participant particular partner party pass past patient
pattern pay payment peace people per perform performance perhaps period person personal phone physical pick
picture piece place plan plant play player point police policy political poor popular population position
positive possible power practice prepare present president pressure pretty prevent price print private probably
problem process produce product production professional professor program project property protect prove provide
public pull purpose push put quality question quickly quite race radio raise range rate rather reach read ready
real reality realize really reason receipt receive recent recently recognize record red reduce reflect region
relate relationship remain remember remove report represent require research resource respond response rest
result return reveal rich right rise risk road rock role room rule run safe same save say scene school science
score sea season seat second section security see seek seem sell send senior sense series serious serve service
set seven several shake share she shipping short shot should shoulder show side sign significant similar simple
simply since sing single sister sit site situation six size skill skin small smile so social society soldier some
somebody someone something sometimes son song soon sort sound source south space speak special specific speech
spend sport spring staff stage stand standard star start state statement station status stay step still stock
stop store story strategy street strong structure student study stuff style subject success successful such
suddenly suffer suggest summary summer support sure surface system table take talk task tax teach teacher team
technology television tell ten tend term test than thank that the their them themselves then theory there these
they thing think third this those though thought thousand threat three through throughout throw thus time to
today together tonight too top total tough toward town trade traditional training travel treat treatment tree
trial trip trouble true truth try turn two type under understand unit until up upon us use usually value various
very victim view violence visit voice vote wait walk wall want war watch water way we weapon wear week weight well
west western what whatever when where whether which while white who whole whom whose why wide wife will win wind
window wish with within without woman wonder word work worker world worry would write writer wrong yard yeah year
yes yet you young your yourself
"""

WORDS = tuple(sorted(set(_WORDS.split())))


def split_words(words=WORDS, heldout_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """
    `(train, heldout)`: a deterministic split of `words` by a checksum of each word (the same on every machine and
    Python version), so that held-out evaluation pages use words no training page contains.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie strictly between 0 and 1, got {heldout_fraction}.")
    buckets = 1000
    heldout = [word for word in words if zlib.crc32(word.encode("utf-8")) % buckets < heldout_fraction * buckets]
    chosen = set(heldout)
    return [word for word in words if word not in chosen], heldout
